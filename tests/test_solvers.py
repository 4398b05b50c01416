"""Solvers against oracle velocity fields with known exact solutions.

Curved problem: data x0 ~ N(mu, s^2) per coordinate. Its flow-matching velocity field is exact in
closed form and the ODE from t = 1 maps noise x1 to ``mu + s * x1``, so the global error of every
solver is measured without a reference run.
"""

from __future__ import annotations

import pytest
import torch

from skyreels_core.errors import InputError
from skyreels_core.sampling import flow_sigmas
from skyreels_core.sampling.schedules import lagged_sigmas
from skyreels_core.sampling.solvers import PerScheduleSolver, log_snr, make_solver

MU, STD = 0.7, 2.0
NOISE = torch.tensor([-1.5, -0.3, 0.4, 1.2], dtype=torch.float64)


def gaussian_velocity(x: torch.Tensor, t: float) -> torch.Tensor:
    variance = (1 - t) ** 2 * STD**2 + t**2
    denoised = MU + (1 - t) * STD**2 / variance * (x - (1 - t) * MU)
    return (x - denoised) / t


def solve(name: str, steps: int, shift: float) -> torch.Tensor:
    sigmas = flow_sigmas(steps, shift).tolist()
    solver = make_solver(name, sigmas)
    latents = [NOISE.clone(), 2 * NOISE.clone()]
    for index in range(steps):
        velocities = [gaussian_velocity(x, sigmas[index]) for x in latents]
        latents = solver.step(index, latents, velocities)
    return latents


def error(name: str, steps: int, shift: float) -> float:
    video, audio = solve(name, steps, shift)
    return max(
        (video - (MU + STD * NOISE)).abs().max().item(),
        (audio - (MU + STD * 2 * NOISE)).abs().max().item(),
    )


@pytest.mark.parametrize("name", ["euler", "unipc", "dpmpp_2m"])
def test_straight_paths_recover_x0_exactly(name):
    data = torch.linspace(-1, 1, 12, dtype=torch.float64).view(3, 4)
    noise = torch.randn(3, 4, dtype=torch.float64)
    sigmas = flow_sigmas(7, 5.0).tolist()
    solver = make_solver(name, sigmas)
    latents = [noise.clone()]
    for index in range(7):
        # The oracle of a straight path: v = eps - x0, whatever the current x.
        latents = solver.step(index, latents, [noise - data])
    torch.testing.assert_close(latents[0], data, rtol=0, atol=1e-12)


def test_euler_is_first_order():
    ratio = error("euler", 64, 1.0) / error("euler", 128, 1.0)
    assert 1.9 < ratio < 2.1


@pytest.mark.parametrize("shift", [1.0, 5.0])
def test_unipc_is_second_order(shift):
    ratio = error("unipc", 64, shift) / error("unipc", 128, shift)
    assert 3.6 < ratio < 4.6


@pytest.mark.parametrize("shift", [1.0, 5.0])
def test_dpmpp_2m_is_second_order(shift):
    # On a grid uniform in t the log-SNR steps at both ends do not shrink (t = 1/N and 2/N are
    # log 2 apart for every N), which costs DPM++ 2M a log factor: ratio 4 log(N) / log(2N),
    # measured 3.3-3.5 at N = 128 -> 256 against Euler's 2.
    ratio = error("dpmpp_2m", 128, shift) / error("dpmpp_2m", 256, shift)
    assert 3.2 < ratio < 4.3


def test_second_order_solvers_beat_euler_at_equal_steps():
    assert error("unipc", 20, 5.0) < error("euler", 20, 5.0) / 5
    assert error("dpmpp_2m", 20, 5.0) < error("euler", 20, 5.0) / 5


def test_streams_share_one_clock():
    # The same solver run on [a, b] together and on each alone gives the same numbers.
    together = solve("unipc", 10, 5.0)
    sigmas = flow_sigmas(10, 5.0).tolist()
    for n, start in enumerate([NOISE, 2 * NOISE]):
        solver = make_solver("unipc", sigmas)
        latents = [start.clone()]
        for index in range(10):
            latents = solver.step(index, latents, [gaussian_velocity(latents[0], sigmas[index])])
        torch.testing.assert_close(latents[0], together[n], rtol=0, atol=0)


def test_log_snr_limits():
    assert log_snr(1.0) == float("-inf") and log_snr(0.0) == float("inf")
    assert log_snr(0.5) == 0.0


def test_unknown_solver_names_the_choices():
    with pytest.raises(InputError, match="unipc, euler, dpmpp_2m"):
        make_solver("ddim", [1.0, 0.0])


@pytest.mark.parametrize("start", [0.95, 1.0])
@pytest.mark.parametrize(("name", "tolerance"), [("unipc", 1e-12), ("dpmpp_2m", 1e-6)])
def test_multistep_solvers_match_diffusers_schedulers(name, tolerance, start):
    """Below t = 1 diffusers' schedulers have finite log-SNR too. From t = 1 (pure noise, λ =
    -inf) ours never use that point as history: diffusers is told so by restarting its count of
    lower-order steps after the first step, else its UniC at the third step would take the
    infinite λ gap as an order-2 node (ρ = B1 instead of UniC-1's 1/2, 7e-4 apart after 10
    steps). DPM++ upcasts to float32 internally, hence its looser tolerance."""
    from diffusers.schedulers.scheduling_dpmsolver_multistep import DPMSolverMultistepScheduler
    from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler

    steps = 10
    options = dict(use_flow_sigmas=True, prediction_type="flow_prediction", solver_order=2)
    if name == "unipc":
        scheduler = UniPCMultistepScheduler(**options)
    else:
        scheduler = DPMSolverMultistepScheduler(
            algorithm_type="dpmsolver++", final_sigmas_type="zero", **options
        )
    scheduler.set_timesteps(steps)
    sigmas = flow_sigmas(steps, 3.0, start=start)
    scheduler.sigmas, scheduler.timesteps = sigmas.clone(), sigmas[:-1] * 1000
    theirs = ((1 - start) * MU + start * NOISE).view(1, 4, 1)
    solver = make_solver(name, sigmas.tolist())
    ours = [theirs.clone()]
    for index in range(steps):
        t = sigmas[index].item()
        theirs = scheduler.step(
            gaussian_velocity(theirs, t), scheduler.timesteps[index], theirs
        ).prev_sample
        if index == 0 and start == 1.0:
            scheduler.lower_order_nums = 0  # t = 1 is no history
        ours = solver.step(index, ours, [gaussian_velocity(ours[0], t)])
    torch.testing.assert_close(ours[0], theirs, rtol=0, atol=tolerance)


def test_the_sounds_lagged_times_keep_the_ends_and_run_behind():
    sigmas = flow_sigmas(6, 3.0).tolist()
    assert lagged_sigmas(sigmas, 1.0) == pytest.approx(sigmas)
    lagged = lagged_sigmas(sigmas, 2.0)
    assert (lagged[0], lagged[-1]) == (1.0, 0.0)
    assert all(a > v for a, v in zip(lagged[1:-1], sigmas[1:-1]))
    assert all(b < a for a, b in zip(lagged, lagged[1:]))  # still a schedule: strictly down
    assert lagged_sigmas([1.0, 0.5, 0.0], 2.0) == [1.0, 0.75, 0.0]
    # A refinement from 0.6 starts the sound where its initial latent was noised, not above.
    assert lagged_sigmas([0.6, 0.3, 0.0], 2.0) == pytest.approx([0.6, 0.45, 0.0])


@pytest.mark.parametrize("name", ["euler", "unipc", "dpmpp_2m"])
def test_streams_on_their_own_schedules_step_as_each_would_alone(name):
    """Streams sharing a schedule step exactly as one solver steps them together, bit for bit
    (joint sampling is unchanged); a stream on its own schedule steps as a solver of its own."""
    picture, sound = flow_sigmas(8, 3.0).tolist(), lagged_sigmas(flow_sigmas(8, 3.0).tolist(), 2.0)
    streams = [NOISE.clone(), 2 * NOISE.clone(), 3 * NOISE.clone()]
    schedules = [picture, sound, picture]
    together = PerScheduleSolver(name, schedules)
    alone = [make_solver(name, picture), make_solver(name, sound)]
    joint, single = list(streams), [[streams[0], streams[2]], [streams[1]]]
    for index in range(8):
        times = [schedule[index] for schedule in schedules]
        joint = together.step(index, joint, [gaussian_velocity(x, t) for x, t in zip(joint, times)])
        single = [
            solver.step(index, xs, [gaussian_velocity(x, s[index]) for x in xs])
            for solver, xs, s in zip(alone, single, (picture, sound))
        ]
    assert torch.equal(joint[0], single[0][0]) and torch.equal(joint[2], single[0][1])
    assert torch.equal(joint[1], single[1][0])
