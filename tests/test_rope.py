"""One clock for both streams: rotary positions, the audio scale and shift invariance."""

from __future__ import annotations

import torch

from skyreels_core.blocks import AVCrossAttention
from skyreels_core.rope import (
    apply_rotary,
    audio_angles,
    audio_group_angles,
    audio_time_scale,
    axis_split,
    device_table,
    rotary,
    video_angles,
    video_positions,
)


def test_wan_split_of_the_head_dimension():
    assert tuple(2 * p for p in axis_split(128)) == (44, 42, 42)


def test_audio_scale_is_latent_frames_over_audio_tokens():
    assert audio_time_scale(21, 218) == 21 / 218
    times = torch.arange(218, dtype=torch.float64) * audio_time_scale(21, 218)
    assert (
        abs(times[-1].item() - 217 * 21 / 218) < 1e-12
    )  # the last audio token sits before frame 21


def test_audio_group_phase_tells_the_frame_inside_a_latent_group():
    # 3 latents = 9 frames; 9 audio tokens put token j on frame j, 4 reference tokens before it.
    angles = audio_group_angles(9, 4, 3, harmonics=2)
    phase = torch.cat([angles.sin(), angles.cos()], 1)  # what the model feeds its audio embedding
    clip = phase[4:]
    assert phase.shape == (13, 4)
    assert torch.allclose(clip[0], torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64))
    # Frame 2 is half a group on: sin pi, sin 2 pi, cos pi, cos 2 pi.
    assert torch.allclose(
        clip[2], torch.tensor([0.0, 0.0, -1.0, 1.0], dtype=torch.float64), atol=1e-12
    )
    # The same frame of every group (and of the references before the clip) reads the same ...
    assert torch.allclose(clip[:5], clip[4:], atol=1e-12) and torch.allclose(
        phase[:4], clip[:4], atol=1e-12
    )
    # ... and the 4 frames of a group read 4 different phases.
    assert torch.cdist(clip[:4], clip[:4]).add(torch.eye(4)).min() > 0.5


def test_reference_positions_are_negative_and_keyframes_fractional():
    refs = video_positions(2, 1, 1, time_offset=-2)
    assert refs[:, 0].tolist() == [-2.0, -1.0]
    keys = video_positions(2, 4, 4, times=[0, 4], spatial_scale=0.5)
    assert keys[:, 0].unique().tolist() == [0.0, 4.0]
    quarter = [-0.25, 0.25, 0.75, 1.25]  # both spatial axes on the low-res grid, by centres:
    assert keys[:, 1].unique().tolist() == keys[:, 2].unique().tolist() == quarter
    # each low-res token's 2 x 2 high-res tokens centre on its own position (0 and 1 here)
    cells = keys[:16, 1:].view(2, 2, 2, 2, 2).mean(dim=(1, 3))
    assert cells.flatten(0, 1).tolist() == video_positions(1, 2, 2)[:, 1:].tolist()
    assert video_positions(1, 3, 3, spatial_scale=1.0).tolist() == video_positions(1, 3, 3).tolist()
    assert video_positions(2, 1, 1, times=[0, 4], time_offset=-1)[:, 0].tolist() == [-1.0, 3.0]


def test_the_models_table_puts_references_before_the_clip_and_keyframes_on_its_grid():
    """The model's own table for [2 references | 3 clip frames | 2 high-res keyframes]: the
    references at t = -2, -1 (at -1, 0 they would share rotary positions with the clip's first
    frame, and identity panels get copied into it), the clip at 0..2, and the keyframes at their
    latent frames with their 4x4 tokens around the clip's 2x2 grid coordinates (-0.25 to 1.25).
    With head_dim 32 the split is (6, 5, 5) pairs and each axis's first frequency is 1, so
    columns 0, 6 and 11 are t, h and w themselves."""
    from skyreels_core.mmdit import _video_table

    assert axis_split(32) == (6, 5, 5)
    angles = _video_table((3, 2, 2), 2, (0, 2), (4, 4), 32, 1e4, False)
    assert angles.shape == (8 + 12 + 32, 16)
    t, h, w = angles[:, 0], angles[:, 6], angles[:, 11]
    assert t[:8].tolist() == [-2.0] * 4 + [-1.0] * 4
    assert t[8:20].tolist() == [0.0] * 4 + [1.0] * 4 + [2.0] * 4
    assert h[8:20].tolist() == [0.0, 0.0, 1.0, 1.0] * 3 and w[8:20].tolist() == [0.0, 1.0] * 6
    assert t[20:].tolist() == [0.0] * 16 + [2.0] * 16
    quarter = [-0.25, 0.25, 0.75, 1.25]
    assert h[20:36].tolist() == [x for x in quarter for _ in range(4)]
    assert w[20:36].tolist() == quarter * 4


def test_the_audio_table_puts_reference_sound_before_the_clip_on_the_video_clock():
    """The model's audio table for 3 reference and 7 clip tokens over 3 latent frames: token j
    of the clip at video time j * 3 / 7, reference token i at (-3 + i) * 3 / 7 (references at
    the clip's own times would read as its start). Self-attention spreads Wan's frequencies
    theta^(-2i/d) over the whole head; the cross-modal table turns only the video's 6 temporal
    pairs, by exactly what a video token at the same time turns them."""
    from skyreels_core.mmdit import _audio_table

    times = torch.arange(-3, 7, dtype=torch.float64) * 3 / 7
    angles = _audio_table(7, 3, audio_time_scale(3, 7), 32, 1e4, False)
    frequencies = 1e4 ** (-torch.arange(16, dtype=torch.float64) * 2 / 32)
    torch.testing.assert_close(angles, times[:, None] * frequencies, rtol=1e-12, atol=0)
    cross = _audio_table(7, 3, audio_time_scale(3, 7), 32, 1e4, True)
    assert axis_split(32)[0] == 6 and not cross[:, 6:].any()
    at_same_times = torch.stack([times, torch.full_like(times, 5.0), torch.ones_like(times)], 1)
    video = video_angles(at_same_times, 32, 1e4, temporal_only=True)
    torch.testing.assert_close(cross, video, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(video[:, :6], times[:, None] * 1e4 ** (-torch.arange(6.0) / 6))


def test_the_model_times_audio_by_its_clip_tokens_with_references_before_them(monkeypatch):
    """With a 5-token sound reference before 11 clip tokens over 3 latent frames, the model's
    audio tables put the clip at T_lat / L_a = 3 / 11 per token (the reference does not stretch
    the clip's clock) and the reference's 5 tokens before it."""
    from model_helpers import inputs, tiny_model

    from skyreels_core import mmdit
    from skyreels_core.types import References

    calls, table = [], mmdit._audio_table
    monkeypatch.setattr(mmdit, "_audio_table", lambda *args: calls.append(args) or table(*args))
    model = tiny_model()
    video, t, text, audio = inputs(model, frames=3, audio_tokens=11)
    with torch.no_grad():
        model(video, t, text, audio, references=References(audio=torch.randn(2, 4, 5)))
    assert {args[:3] for args in calls} == {(11, 5, 3 / 11)}
    assert {args[5] for args in calls} == {False, True}  # self-attention and cross-modal


def test_cross_modal_attention_sees_only_time_offsets():
    torch.manual_seed(0)
    head_dim, heads = 32, 2
    layer = AVCrossAttention(head_dim * heads, heads, 1e-6)
    torch.nn.init.normal_(layer.attn.o.weight, std=0.2)
    audio = torch.randn(1, 7, 64)
    video = torch.randn(1, 12, 64)

    def run(shift: float):
        video_pos = video_positions(3, 2, 2) + torch.tensor([shift, 0.0, 0.0], dtype=torch.float64)
        audio_times = torch.arange(7, dtype=torch.float64) * 3 / 7 + shift
        video_table = rotary(video_angles(video_pos, head_dim, 10000.0, temporal_only=True))
        audio_table = rotary(audio_angles(audio_times, head_dim, 10000.0, temporal_only=True))
        return layer(audio, video, audio_table, video_table)

    assert torch.allclose(run(0.0), run(5.0), atol=1e-5)
    # Temporal-only tables ignore where a token is in the frame.
    positions = video_positions(1, 3, 3)
    angles = video_angles(positions, head_dim, 10000.0, temporal_only=True)
    assert (angles == angles[:1]).all()
    # ... while the self-attention tables do not.
    assert not (
        video_angles(positions, head_dim, 10000.0) == video_angles(positions, head_dim, 10000.0)[:1]
    ).all()


def test_rotation_is_the_same_eagerly_and_under_compile():
    """Eager code turns each pair by a complex multiply, traced code by real arithmetic (Inductor
    generates no code for complex operators): both rotate by the angle, forward and backward."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 3, 8, requires_grad=True)
    angles = torch.rand(5, 4, dtype=torch.float64) * 10
    table = rotary(angles)
    pairs = x.detach().double().unflatten(-1, (-1, 2))
    cos, sin = angles.cos()[:, None], angles.sin()[:, None]
    real, imag = pairs[..., 0], pairs[..., 1]
    expected = torch.stack((real * cos - imag * sin, real * sin + imag * cos), -1).flatten(-2)
    traced = torch.compile(apply_rotary, backend="aot_eager", fullgraph=True)
    outputs = [apply_rotary(x, table), traced(x, table)]
    for out in outputs:
        assert torch.allclose(out.double(), expected, atol=1e-6)
    eager_grad, traced_grad = (torch.autograd.grad(out.square().sum(), x)[0] for out in outputs)
    assert torch.allclose(eager_grad, traced_grad, atol=1e-6)
    half = apply_rotary(x.detach().bfloat16(), table)  # rotated in float32, returned as given
    assert half.dtype == torch.bfloat16 and torch.allclose(half.double(), expected, atol=0.1)


def test_half_precision_is_rotated_in_parts_exactly_as_whole(monkeypatch):
    """bf16 q and k are rotated ROTARY_CHUNK tokens at a time (their whole float32 copies were
    the model's activation peak): the same numbers as one rotation, with or without a gradient."""
    from skyreels_core import rope

    x = torch.randn(2, 11, 3, 8).bfloat16()
    table = rotary(torch.rand(11, 4, dtype=torch.float64) * 10)
    whole = rope.apply_rotary(x, table)
    monkeypatch.setattr(rope, "ROTARY_CHUNK", 4)
    assert torch.equal(rope.apply_rotary(x, table), whole)
    leaf = x.clone().requires_grad_()
    rope.apply_rotary(leaf, table).float().square().sum().backward()
    assert leaf.grad.shape == x.shape and leaf.grad.abs().sum() > 0


def test_device_table_is_made_once_per_angles_and_inference_mode():
    angles = video_angles(video_positions(2, 3, 4), 12, 10000.0)
    table = device_table(angles, "cpu")
    torch.testing.assert_close(table, rotary(angles), rtol=0, atol=0)
    assert device_table(angles, torch.device("cpu")) is table  # no copy on later forwards
    with torch.inference_mode():
        sampled = device_table(angles, "cpu")
    assert sampled is not table and not table.is_inference()  # training can still save it
    assert device_table(angles.clone(), "cpu") is not table  # keyed by the angles tensor itself


def test_the_device_tables_hold_a_render_and_do_not_pile_up_across_shapes():
    """A forward with references, keyframes and sound finds every table made by the one before
    it (no copy per step), and renders of ever new shapes keep at most DEVICE_TABLES of them on
    the device (each is tens of MB at 720p, beyond the host's reach)."""
    from model_helpers import inputs, tiny_model

    from skyreels_core.rope import DEVICE_TABLES, _device_table
    from skyreels_core.types import References

    model = tiny_model(audio_phase_harmonics=2).eval()
    video, t, text, audio = inputs(model, batch=1, frames=3, height=4, width=4)
    references = References(video=torch.randn(1, model.config.video_latent_channels, 1, 4, 4),
                            audio=torch.randn(1, model.config.audio_latent_channels, 6))  # fmt: skip
    keyframes = torch.randn(1, model.config.video_in_channels, 1, 8, 8)
    _device_table.cache_clear()
    with torch.no_grad():
        for _ in range(2):
            model(video, t, text, audio, references=references, keyframes=keyframes,
                  keyframe_indices=[1])  # fmt: skip
    made = _device_table.cache_info()
    assert made.misses <= DEVICE_TABLES and made.hits == made.misses  # the second step: all hits
    for side in range(2, 30):
        device_table(video_angles(video_positions(1, side, 2), 12, 10000.0), "cpu")
    assert _device_table.cache_info().currsize == DEVICE_TABLES
