"""The flow-matching objective and its sign convention."""

from __future__ import annotations

import torch

from skyreels_core.objective import flow_matching_loss, noised, velocity_target


def test_straight_path_and_velocity():
    x0, noise = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    t = torch.tensor([0.0, 1.0])
    xt = noised(x0, noise, t)
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[1], noise[1])
    # Moving along the velocity from t to t - dt goes toward the data.
    mid = noised(x0, noise, torch.tensor([0.5, 0.5]))
    assert torch.allclose(mid - 0.5 * velocity_target(x0, noise), x0, atol=1e-6)


def test_known_cells_carry_no_loss():
    x0, noise = torch.zeros(1, 2, 3, 2, 2), torch.ones(1, 2, 3, 2, 2)
    prediction = torch.ones_like(x0)
    known = torch.zeros(1, 1, 3, 2, 2)
    known[:, :, 0] = 1
    prediction[:, :, 0] = 100.0  # wrong only where known
    assert flow_matching_loss(prediction, x0, noise, known_mask=known).item() == 0.0
    audio = flow_matching_loss(
        prediction,
        x0,
        noise,
        torch.zeros(1, 2, 5),
        torch.zeros(1, 2, 5),
        torch.ones(1, 2, 5),
        known,
    )
    assert audio.item() == 1.0


def test_masked_mse_averages_over_the_weighted_cells_only():
    """The loss is the mean over the cells to generate, not over all cells: a task with many known
    cells (extend, i2av) must weigh as much per generated cell as text-to-video."""
    from skyreels_core.objective import masked_mse

    prediction = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    target = torch.zeros(1, 4)
    weight = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    assert masked_mse(prediction, target, weight).item() == 2.5  # (1 + 4) / 2
    assert masked_mse(prediction, target).item() == 7.5  # (1 + 4 + 9 + 16) / 4


def test_a_fully_known_video_gives_zero_video_loss_not_nan():
    """A batch whose video is entirely given has nothing to learn there: its video loss is 0 (and
    the audio loss still counts), never NaN, which would poison every weight in one step."""
    from skyreels_core.objective import masked_mse

    x0, noise = torch.zeros(1, 2, 3, 2, 2), torch.ones(1, 2, 3, 2, 2)
    assert masked_mse(torch.ones(4), torch.zeros(4), torch.zeros(4)).item() == 0.0
    known = torch.ones(1, 1, 3, 2, 2)
    audio = torch.zeros(1, 2, 5), torch.zeros(1, 2, 5), torch.ones(1, 2, 5)
    loss = flow_matching_loss(torch.zeros_like(x0), x0, noise, *audio, known)
    assert loss.item() == 1.0


def test_the_audio_stream_is_trained_on_the_same_velocity_as_the_video():
    """Both streams regress v = eps - x0: a perfect prediction of each costs nothing, and the
    opposite sign on either stream costs 4 per cell (|2v|^2 with v = 1 - 0). Tests whose audio
    x0 and noise are 0 and 1 with a 0 prediction cannot tell the audio sign."""
    generator = torch.Generator().manual_seed(0)
    x0_v, noise_v, x0_a, noise_a = (
        torch.randn(shape, generator=generator) for shape in [(1, 2, 3, 2, 2)] * 2 + [(1, 4, 6)] * 2
    )
    v_video, v_audio = velocity_target(x0_v, noise_v), velocity_target(x0_a, noise_a)
    torch.testing.assert_close(v_audio, noise_a - x0_a, rtol=0, atol=0)
    exact = flow_matching_loss(v_video, x0_v, noise_v, v_audio, x0_a, noise_a)
    assert exact.item() == 0.0
    flipped_audio = flow_matching_loss(v_video, x0_v, noise_v, -v_audio, x0_a, noise_a)
    torch.testing.assert_close(flipped_audio, 4 * v_audio.square().mean())
    ones, zeros = torch.ones(1, 2, 5), torch.zeros(1, 2, 5)
    assert flow_matching_loss(v_video, x0_v, noise_v, -ones, zeros, ones).item() == 4.0
