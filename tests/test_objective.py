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
