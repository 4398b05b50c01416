"""The flow-matching schedule: shift formula, exact endpoints, refinement start."""

from __future__ import annotations

import pytest
import torch

from skyreels_core.errors import InputError
from skyreels_core.sampling import custom_sigmas, flow_sigmas, sigmas_from_text


def test_unshifted_schedule_is_uniform():
    torch.testing.assert_close(
        flow_sigmas(4, 1.0), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64)
    )


def test_shift_five_values():
    # σ' = 5σ / (1 + 4σ) at σ = 0.75, 0.5, 0.25: 15/16, 5/6, 5/8.
    expected = torch.tensor([1.0, 15 / 16, 5 / 6, 5 / 8, 0.0], dtype=torch.float64)
    torch.testing.assert_close(flow_sigmas(4, 5.0), expected, rtol=0, atol=1e-15)


def test_schedule_descends_to_zero():
    sigmas = flow_sigmas(50, 5.0)
    assert sigmas.shape == (51,)
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0
    assert bool((sigmas[1:] < sigmas[:-1]).all())


def test_start_is_hit_exactly_and_stays_on_the_shifted_grid():
    sigmas = flow_sigmas(3, 3.0, start=0.6)
    assert sigmas[0] == 0.6 and sigmas[-1] == 0.0
    # 0.6 unshifts to 1/3; the uniform grid 1/3, 2/9, 1/9, 0 shifted by 3 is 0.6, 6/13, 3/11, 0.
    expected = torch.tensor([0.6, 6 / 13, 3 / 11, 0.0], dtype=torch.float64)
    torch.testing.assert_close(sigmas, expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    ("steps", "shift", "start", "name"),
    [(0, 5.0, 1.0, "steps"), (10, 0.0, 1.0, "shift"), (10, 5.0, 0.0, "denoise_start")],
)
def test_bad_settings_name_the_input(steps, shift, start, name):
    with pytest.raises(InputError) as error:
        flow_sigmas(steps, shift, start)
    assert error.value.input_name == name


def test_a_written_out_schedule_reads_as_papers_and_pasted_lists_print_it():
    expected = torch.tensor([1.0, 0.9375, 0.8333, 0.625, 0.0], dtype=torch.float64)
    for text in (
        "1.0, 0.9375, 0.8333, 0.625, 0",
        "[1.0, 0.9375,0.8333 0.625;\n0.0]",
        "(1.0, 0.9375, 0.8333, 0.625, 0.0)",  # a pasted tuple
    ):
        torch.testing.assert_close(sigmas_from_text(text), expected, rtol=0, atol=0)
    with pytest.raises(InputError, match=r"^custom: '0\.9x' is not a number"):
        sigmas_from_text("1, 0.9x, 0")


@pytest.mark.parametrize(
    ("times", "problem"),
    [
        ([1.0], "1 time"),
        ([1.0, float("nan"), 0.0], "NaN or inf"),
        ([14.6, 1.0, 0.0], "starts at 14.6, outside"),
        ([0.0, 0.0], "starts at 0, outside"),
        ([1.0, 0.5, 0.1], "ends at 0.1"),
        ([1.0, 0.5, -0.1], "ends at -0.1"),  # past the data: the last step would overshoot it
        ([1.0, 0.5, 0.5, 0.0], "not strictly decreasing"),
        ([1.0, 0.4, 0.6, 0.0], "not strictly decreasing"),
    ],
)
def test_a_given_schedule_that_cannot_render_names_its_problem(times, problem):
    with pytest.raises(InputError, match=problem) as error:
        custom_sigmas(torch.tensor(times, dtype=torch.float32))
    assert error.value.input_name == "sigmas"


def test_the_karras_advice_names_the_numbers_that_fit_flow_matching():
    with pytest.raises(InputError, match="set sigma_max to 1 and sigma_min to about 0.002"):
        custom_sigmas([14.614642, 3.0, 0.0291675, 0.0])
