"""ODE solvers for the flow-matching probability path, advancing all streams together.

Every solver takes the velocity ``v = eps - x0`` that one model call (per guidance branch) gave
for each stream (video, audio, high-res keyframes) and moves all of them from ``sigmas[i]`` to
``sigmas[i + 1]`` with the same coefficients, so the two modalities stay on one clock.

The multistep solvers work on the data prediction ``x0 = x - t v`` in log-SNR time
``λ = log((1 - t) / t)`` (DPM-Solver++ [Lu et al. 2022], UniPC [Zhao et al. 2023], both with
``α = 1 - t``, ``σ = t`` for flow matching). At t = 1, λ = -inf: a step that starts from pure noise
is first order (it reduces to Euler) and that point is never used as multistep history, which is
where a finite-difference over an infinite λ gap would turn into NaN. The last step, into t = 0
(λ = +inf), is first order too ("lower order final"): it returns the data prediction itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import InputError

Streams = list[torch.Tensor]


def log_snr(sigma: float) -> float:
    """``λ = log((1 - t) / t)`` with the limits ±inf at t = 0 and t = 1."""
    if sigma <= 0.0:
        return math.inf
    if sigma >= 1.0:
        return -math.inf
    return math.log1p(-sigma) - math.log(sigma)


def data_prediction(latents: Streams, velocities: Streams, sigma: float) -> Streams:
    """``x0 = x - t v`` per stream: the clean latents the velocity points at."""
    return [x - sigma * v for x, v in zip(latents, velocities)]


class FlowSolver:
    """Base of the solvers: holds the schedule; ``step`` is called once per index, in order."""

    def __init__(self, sigmas: Sequence[float]) -> None:
        self.sigmas = [float(s) for s in sigmas]
        self.lambdas = [log_snr(s) for s in self.sigmas]

    def step(self, index: int, latents: Streams, velocities: Streams) -> Streams:
        raise NotImplementedError

    def _second_order(self, index: int) -> bool:
        """Whether step ``index`` may use the previous point: both λ finite and not the last step."""
        return (
            index >= 1 and math.isfinite(self.lambdas[index - 1]) and self.sigmas[index + 1] > 0.0
        )


class EulerSolver(FlowSolver):
    """``x_{i+1} = x_i + (t_{i+1} - t_i) v``: exact on straight paths, first order otherwise."""

    def step(self, index: int, latents: Streams, velocities: Streams) -> Streams:
        dt = self.sigmas[index + 1] - self.sigmas[index]
        return [x + dt * v for x, v in zip(latents, velocities)]


class DPMPP2MSolver(FlowSolver):
    """DPM-Solver++(2M): exponential integrator on x0, second order from the last two x0."""

    def __init__(self, sigmas: Sequence[float]) -> None:
        super().__init__(sigmas)
        self._previous: Streams | None = None

    def step(self, index: int, latents: Streams, velocities: Streams) -> Streams:
        sigma, sigma_next = self.sigmas[index], self.sigmas[index + 1]
        denoised = data_prediction(latents, velocities, sigma)
        previous, self._previous = self._previous, denoised
        if sigma_next == 0.0:
            return denoised
        h = self.lambdas[index + 1] - self.lambdas[index]
        if self._second_order(index):
            half_over_r = 0.5 * h / (self.lambdas[index] - self.lambdas[index - 1])
            denoised = [(1 + half_over_r) * d - half_over_r * p for d, p in zip(denoised, previous)]
        ratio = sigma_next / sigma
        weight = -(1.0 - sigma_next) * math.expm1(-h)
        return [ratio * x + weight * d for x, d in zip(latents, denoised)]


class UniPCSolver(FlowSolver):
    """UniPC-2 (B(h) = e^h - 1, "bh2"), data prediction: a UniP predictor of order 2 and the UniC
    corrector, which reuses the model call made at the new point anyway, so it costs no extra call.

    Order 2 overall: warm-up from t = 1 and the final step into t = 0 are first order."""

    def __init__(self, sigmas: Sequence[float]) -> None:
        super().__init__(sigmas)
        self._denoised: list[Streams] = []
        self._last_latents: Streams | None = None
        self._last_order = 1

    def step(self, index: int, latents: Streams, velocities: Streams) -> Streams:
        denoised = data_prediction(latents, velocities, self.sigmas[index])
        if index > 0:
            latents = self._correct(index, denoised)
        self._denoised = [*self._denoised[-1:], denoised]
        order = 2 if self._second_order(index) else 1
        self._last_latents, self._last_order = latents, order
        return self._predict(index, latents, order)

    def _predict(self, index: int, latents: Streams, order: int) -> Streams:
        sigma, sigma_next = self.sigmas[index], self.sigmas[index + 1]
        alpha_next = 1.0 - sigma_next
        hh = self.lambdas[index] - self.lambdas[index + 1]
        phi_1 = math.expm1(hh)
        ratio = sigma_next / sigma
        current = self._denoised[-1]
        if order == 1:
            return [ratio * x - alpha_next * phi_1 * m for x, m in zip(latents, current)]
        previous = self._denoised[-2]
        rk = (self.lambdas[index - 1] - self.lambdas[index]) / (-hh)
        # rhos_p = 1/2 for order 2 (UniPC's simplified predictor): D1 = (m_prev - m) / rk.
        weight = -alpha_next * math.expm1(hh) * 0.5 / rk
        return [
            ratio * x - alpha_next * phi_1 * m + weight * (p - m)
            for x, m, p in zip(latents, current, previous)
        ]

    def _correct(self, index: int, denoised: Streams) -> Streams:
        """UniC: re-do the last step with the new x0 as an extra node of the interpolation."""
        sigma, sigma_prev = self.sigmas[index], self.sigmas[index - 1]
        alpha = 1.0 - sigma
        hh = self.lambdas[index - 1] - self.lambdas[index]
        phi_1 = math.expm1(hh)
        b_h = math.expm1(hh)
        ratio = sigma / sigma_prev
        base = self._denoised[-1]
        if self._last_order == 1:
            rho_new, rho_old, older = 0.5, 0.0, None
        else:
            older = self._denoised[-2]
            rk = (self.lambdas[index - 2] - self.lambdas[index - 1]) / (-hh)
            phi_k = phi_1 / hh - 1.0
            b1 = phi_k / b_h
            b2 = (phi_k / hh - 0.5) * 2.0 / b_h
            # Solves [[1, 1], [rk, 1]] @ (rho_old, rho_new) = (b1, b2).
            rho_old = (b1 - b2) / (1.0 - rk)
            rho_new = b1 - rho_old
        corrected = []
        for n, (x, m0, mt) in enumerate(zip(self._last_latents, base, denoised)):
            update = rho_new * (mt - m0)
            if older is not None:
                update = update + (rho_old / rk) * (older[n] - m0)
            corrected.append(ratio * x - alpha * phi_1 * m0 - alpha * b_h * update)
        return corrected


SOLVERS = {"unipc": UniPCSolver, "euler": EulerSolver, "dpmpp_2m": DPMPP2MSolver}  # default first


def make_solver(name: str, sigmas: Sequence[float]) -> FlowSolver:
    """The solver called ``name`` over ``sigmas``; a fresh one per render (multistep history)."""
    if name not in SOLVERS:
        raise InputError("solver", f"unknown solver {name!r}", f"use one of {', '.join(SOLVERS)}")
    return SOLVERS[name](sigmas)


class PerScheduleSolver:
    """The sampler's solver over streams that may each run their own schedule (the sound behind
    the picture): one ``name`` solver per distinct schedule, stepping with its own multistep
    history the streams on it. Streams on one schedule, as in joint sampling, share one solver,
    so its steps are those of :func:`make_solver`'s."""

    def __init__(self, name: str, schedules: Sequence[Sequence[float]]) -> None:
        keys = [tuple(float(sigma) for sigma in schedule) for schedule in schedules]
        distinct = list(dict.fromkeys(keys))
        self.solvers = [make_solver(name, schedule) for schedule in distinct]
        self.groups = [[n for n, key in enumerate(keys) if key == d] for d in distinct]

    def step(self, index: int, latents: Streams, velocities: Streams) -> Streams:
        stepped: list[torch.Tensor | None] = [None] * len(latents)
        for solver, group in zip(self.solvers, self.groups):
            moved = solver.step(index, [latents[n] for n in group], [velocities[n] for n in group])
            for n, x in zip(group, moved):
                stepped[n] = x
        return stepped
