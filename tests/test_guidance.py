"""Guidance arithmetic per stream: CFG, CFG-Zero*, APG."""

from __future__ import annotations

import torch

from skyreels_core.sampling.guidance import (
    AdaptiveProjectedGuidance,
    StreamGuidance,
    cfg_zero_star_scale,
)


def pair(*shape: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(*shape), torch.randn(*shape)


def test_cfg_uses_a_separate_scale_per_stream():
    video_c, video_u = pair(2, 3, 2, 4, 4)
    audio_c, audio_u = pair(2, 5, 7)
    latents = [torch.zeros(2, 3, 2, 4, 4), torch.zeros(2, 5, 7)]
    guidance = StreamGuidance([4.0, 3.0])
    video, audio = guidance.combine(0, [0.5, 0.5], latents, [video_c, audio_c], [video_u, audio_u])
    torch.testing.assert_close(video, video_u + 4.0 * (video_c - video_u))
    torch.testing.assert_close(audio, audio_u + 3.0 * (audio_c - audio_u))


def test_scale_one_returns_the_conditional_velocity_untouched():
    video_c, video_u = pair(1, 2, 1, 2, 2)
    audio_c, audio_u = pair(1, 3, 4)
    guidance = StreamGuidance([1.0, 2.5])
    assert guidance.needs_unconditional
    video, audio = guidance.combine(
        0, [0.5, 0.5], [video_c, audio_c], [video_c, audio_c], [video_u, audio_u]
    )
    assert torch.equal(video, video_c)
    torch.testing.assert_close(audio, audio_u + 2.5 * (audio_c - audio_u))


def test_all_scales_one_needs_no_unconditional_pass():
    assert not StreamGuidance([1.0, 1.0, 1.0]).needs_unconditional
    assert StreamGuidance([1.0, 1.0, 1.5]).needs_unconditional


def test_cfg_zero_star_scale_is_the_projection_coefficient():
    uncond = torch.randn(3, 4, 5)
    cond = torch.stack([2.0 * uncond[0], -0.5 * uncond[1], uncond[2]])
    scale = cfg_zero_star_scale(cond, uncond)
    assert scale.shape == (3, 1, 1)
    torch.testing.assert_close(scale.flatten(), torch.tensor([2.0, -0.5, 1.0]))


def test_cfg_zero_star_zero_init_then_rescaled_guidance():
    cond, uncond = pair(2, 6)
    latents = [torch.zeros(2, 6)]
    guidance = StreamGuidance([5.0], cfg_zero_star=True, zero_init_steps=1)
    first = guidance.combine(0, [1.0], latents, [cond], [uncond])[0]
    assert torch.equal(first, torch.zeros_like(cond))
    second = guidance.combine(1, [0.9], latents, [cond], [uncond])[0]
    star = (cond * uncond).sum(1, keepdim=True) / (uncond * uncond).sum(1, keepdim=True)
    torch.testing.assert_close(second, star * uncond + 5.0 * (cond - star * uncond))


def test_apg_keeps_only_the_update_orthogonal_to_the_conditional_x0():
    x = torch.randn(2, 3, 8)
    cond, uncond = pair(2, 3, 8)
    sigma, scale = 0.6, 4.0
    guidance = StreamGuidance([scale], apg=(0.0, 0.0, 0.0))
    guided = guidance.combine(3, [sigma], [x], [cond], [uncond])[0]
    cond_x0 = x - sigma * cond
    change = (x - sigma * guided) - cond_x0
    # Orthogonal to the conditional x0 per sample, and equal to CFG's change minus its projection.
    dots = (change * cond_x0).flatten(1).sum(1)
    torch.testing.assert_close(dots, torch.zeros(2), atol=1e-4, rtol=0)
    cfg_change = (scale - 1) * sigma * (uncond - cond)
    unit = cond_x0 / cond_x0.flatten(1).norm(dim=1).view(2, 1, 1)
    expected = cfg_change - (cfg_change * unit).flatten(1).sum(1).view(2, 1, 1) * unit
    torch.testing.assert_close(change, expected, atol=1e-5, rtol=1e-5)


def test_apg_with_eta_one_and_no_momentum_is_cfg():
    x = torch.randn(1, 4, 4)
    cond, uncond = pair(1, 4, 4)
    guided = StreamGuidance([3.0], apg=(0.0, 1.0, 0.0)).combine(0, [0.3], [x], [cond], [uncond])
    torch.testing.assert_close(guided[0], uncond + 3.0 * (cond - uncond), atol=1e-5, rtol=1e-5)


def test_apg_momentum_and_norm_threshold():
    apg = AdaptiveProjectedGuidance(momentum=-0.5, eta=1.0, norm_threshold=0.0)
    cond_x0 = torch.ones(1, 4)
    first = apg.update(cond_x0, cond_x0 - torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    second = apg.update(cond_x0, cond_x0 - torch.tensor([[0.0, 2.0, 0.0, 0.0]]))
    torch.testing.assert_close(first, torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(second, torch.tensor([[-0.5, 2.0, 0.0, 0.0]]))
    clipped = AdaptiveProjectedGuidance(momentum=0.0, eta=1.0, norm_threshold=1.0)
    out = clipped.update(cond_x0, cond_x0 - torch.tensor([[3.0, 4.0, 0.0, 0.0]]))
    torch.testing.assert_close(out, torch.tensor([[0.6, 0.8, 0.0, 0.0]]))


def test_apg_momentum_accumulates_over_every_step():
    """The running average is the smoothed difference, so momentum reaches back more than one
    step: the third step sees [0, 0, 4, 0] - 0.5 x (the second's smoothed [-0.5, 2, 0, 0]). Kept
    as the raw difference instead, momentum is only ever one step deep (a two-step check cannot
    tell)."""
    apg = AdaptiveProjectedGuidance(momentum=-0.5, eta=1.0, norm_threshold=0.0)
    cond_x0 = torch.ones(1, 4)
    outputs = [
        apg.update(cond_x0, cond_x0 - torch.tensor([diff]))
        for diff in ([1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 4.0, 0.0])
    ]
    torch.testing.assert_close(outputs[1], torch.tensor([[-0.5, 2.0, 0.0, 0.0]]))
    torch.testing.assert_close(outputs[2], torch.tensor([[0.25, -1.0, 4.0, 0.0]]))


def test_apg_norm_threshold_only_shrinks():
    """A guidance difference under ``norm_threshold`` is left as it is: scaling it up to the
    threshold would over-guide every quiet step (saturated output)."""
    apg = AdaptiveProjectedGuidance(momentum=0.0, eta=1.0, norm_threshold=10.0)
    cond_x0 = torch.ones(1, 4)
    out = apg.update(cond_x0, cond_x0 - torch.tensor([[3.0, 4.0, 0.0, 0.0]]))
    torch.testing.assert_close(out, torch.tensor([[3.0, 4.0, 0.0, 0.0]]))


def test_zero_init_asks_for_no_pass_when_every_stream_is_guided():
    guidance = StreamGuidance([4.0, 3.0], cfg_zero_star=True, zero_init_steps=2)
    assert guidance.branches(0) == (False, False) and guidance.branches(1) == (False, False)
    assert guidance.branches(2) == (True, True)
    latents = [torch.ones(1, 3), torch.ones(1, 2)]
    zeros = guidance.combine(1, [0.8, 0.8], latents, None, None)
    assert [torch.count_nonzero(v).item() for v in zeros] == [0, 0]
    # An unguided stream still needs its conditional pass during zero-init.
    mixed = StreamGuidance([1.0, 3.0], cfg_zero_star=True)
    assert mixed.branches(0) == (True, False)
    cond = [torch.full((1, 3), 2.0), torch.full((1, 2), 5.0)]
    video, audio = mixed.combine(0, [1.0, 1.0], latents, cond, None)
    assert torch.equal(video, cond[0]) and torch.equal(audio, torch.zeros(1, 2))


def test_apg_keeps_each_streams_momentum_to_itself():
    """Video and audio each smooth their own guidance difference: over three steps, guiding both
    together gives every stream what guiding it alone gives. One running average for both would
    push the audio along the video's last difference. Each stream's x0 is read at its own time
    (the sound behind the picture: 0.85 against 0.7)."""
    generator = torch.Generator().manual_seed(0)
    shapes = [(1, 3, 2, 4), (1, 3, 2, 4)]  # alike, so a shared running average would still run
    steps = [
        [(torch.randn(s, generator=generator), torch.randn(s, generator=generator)) for s in shapes]
        for _ in range(3)
    ]
    latents = [torch.randn(s, generator=generator) for s in shapes]
    apg = (-0.5, 0.0, 0.0)
    together = StreamGuidance([4.0, 3.0], apg=apg)
    alone = [StreamGuidance([scale], apg=apg) for scale in (4.0, 3.0)]
    for index, passes in enumerate(steps):
        cond, uncond = [c for c, _ in passes], [u for _, u in passes]
        guided = together.combine(index, [0.7, 0.85], latents, cond, uncond)
        for n, single in enumerate(alone):
            sigma = [0.7, 0.85][n]
            expected = single.combine(index, [sigma], [latents[n]], [cond[n]], [uncond[n]])[0]
            torch.testing.assert_close(guided[n], expected, rtol=0, atol=0)
