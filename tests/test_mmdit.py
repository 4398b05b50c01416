"""The dual-stream MMDiT: shapes, stream coupling, references, keyframes, precision, learning."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from model_helpers import WAN_TINY, inputs, randomise_av_exchange, tiny_model, zero_av_exchange

from skyreels_core.config import PRESETS, get_preset
from skyreels_core.errors import InputError
from skyreels_core.loading import build_on_meta
from skyreels_core.mmdit import DualStreamMMDiT, float64_device, sinusoidal_embedding
from skyreels_core.objective import flow_matching_loss, noised
from skyreels_core.types import References, TextEncoding


@torch.no_grad()
def test_output_shapes_for_both_streams():
    model = tiny_model()
    video, t, text, audio = inputs(model)
    out = model(video, t, text, audio=audio)
    assert out.video.shape == (2, 4, 3, 4, 6) and out.audio.shape == (2, 4, 11)
    assert out.keyframes is None and torch.isfinite(out.video).all()


@torch.no_grad()
def test_stream_coupling_is_exactly_the_av_exchange():
    model = tiny_model()
    randomise_av_exchange(model)
    video, t, text, audio = inputs(model)
    other_audio = torch.randn_like(audio)
    other_video = video.clone()
    other_video[:, :4] = torch.randn_like(video[:, :4])
    base = model(video, t, text, audio=audio)
    assert (model(video, t, text, audio=other_audio).video - base.video).abs().max() > 1e-3
    assert (model(other_video, t, text, audio=audio).audio - base.audio).abs().max() > 1e-3
    zero_av_exchange(model)
    base = model(video, t, text, audio=audio)
    assert torch.equal(model(video, t, text, audio=other_audio).video, base.video)
    assert torch.equal(model(other_video, t, text, audio=audio).audio, base.audio)


@torch.no_grad()
def test_audio_group_phase_is_one_addition_to_the_audio_embedding():
    plain = tiny_model()
    model = tiny_model(audio_phase_harmonics=2)
    assert not hasattr(plain, "audio_phase") and model.audio_phase.in_features == 4
    missing = model.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["audio_phase.bias", "audio_phase.weight"]
    video, t, text, audio = inputs(model)
    torch.nn.init.zeros_(model.audio_phase.weight)
    torch.nn.init.zeros_(model.audio_phase.bias)
    base = plain(video, t, text, audio=audio)
    same = model(video, t, text, audio=audio)
    assert torch.equal(same.audio, base.audio) and torch.equal(same.video, base.video)
    torch.nn.init.normal_(model.audio_phase.weight)
    assert (model(video, t, text, audio=audio).audio - base.audio).abs().max() > 1e-3


@torch.no_grad()
def test_split_video_frames_start_as_the_paper_exchange():
    """With ``av_video_subframes`` the audio attends one token per frame of each video latent.
    Fresh, the split copies each token: at its latent's time four copies of a key read as one,
    so the exchange computes exactly the paper's; trained, the split sets the frames apart."""
    from skyreels_core.blocks import AVCrossAttention
    from skyreels_core.rope import rotary

    torch.manual_seed(0)
    plain, split = AVCrossAttention(32, 2, 1e-6), AVCrossAttention(32, 2, 1e-6, subframes=4)
    torch.nn.init.normal_(plain.attn.o.weight, std=0.2)
    missing = split.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["split_frames.bias", "split_frames.weight"]
    audio, video = torch.randn(2, 5, 32), torch.randn(2, 6, 32)
    audio_table, video_table = rotary(torch.randn(5, 8)), rotary(torch.randn(6, 8))
    expected = plain(audio, video, audio_table, video_table)
    same = split(audio, video, audio_table, video_table.repeat_interleave(4, dim=0))
    torch.testing.assert_close(same, expected, atol=1e-6, rtol=1e-5)
    torch.nn.init.normal_(split.split_frames.weight, std=0.2)
    moved = split(audio, video, audio_table, video_table.repeat_interleave(4, dim=0))
    assert (moved - expected).abs().max() > 1e-3


def test_the_audio_meets_each_video_frame_at_its_own_time():
    """The audio's side of the exchange runs on a frame clock: latent t's four frame tokens sit
    at frames 4t - 3 to 4t (references and keyframes too), and audio token j at frame j F / L_a,
    so a sound and the frame it falls on are at rotary offset zero anywhere in the clip (the
    latent clock, T_lat / L_a per token, drifts by 9 % of that for 33 frames)."""
    from skyreels_core.mmdit import _audio_table, _video_table
    from skyreels_core.rope import axis_split, inverse_frequencies

    shape = ((3, 2, 2), 1, (1,), (4, 4), 32, 10000.0, True)
    whole, split = _video_table(*shape), _video_table(*shape, 4)
    assert split.shape == (4 * whole.shape[0], whole.shape[1])
    t_pairs = axis_split(32)[0]
    frequencies = inverse_frequencies(2 * t_pairs, 10000.0)
    latent_times = whole[:, 0] / frequencies[0]
    frames = (4 * latent_times[:, None] + torch.arange(-3, 1, dtype=torch.float64)).flatten()
    assert frames[:8].tolist() == [-7, -6, -5, -4] * 2  # the reference at latent time -1
    assert frames[16:24].tolist() == [-3, -2, -1, 0] * 2  # frame 0's latent
    torch.testing.assert_close(split[:, :t_pairs], frames[:, None] * frequencies)
    assert not split[:, t_pairs:].any()
    audio = _audio_table(20, 0, 9 / 20, 32, 10000.0, True)  # 3 latents: 9 frames, 20 tokens
    torch.testing.assert_close(
        audio[::5, 0] / frequencies[0], torch.tensor([0.0, 2.25, 4.5, 6.75], dtype=torch.float64)
    )


@torch.no_grad()
def test_split_video_frames_reach_the_sound_only_through_the_audio_exchange():
    from skyreels_core.mmdit import _audio_table, _video_table
    from skyreels_core.rope import rotary

    model = tiny_model(av_video_subframes=4)
    randomise_av_exchange(model)
    assert not hasattr(model.blocks[0].av_cross_attn, "split_frames")  # video attends audio whole
    video, t, text, audio = inputs(model)  # 3 latents (9 frames), 11 audio tokens
    tables = []
    exchange = model.audio_blocks[0].av_cross_attn
    exchange.register_forward_pre_hook(lambda _, args: tables.append(args[2:4]))
    base = model(video, t, text, audio=audio)
    assert base.audio.shape == audio.shape
    frames = _audio_table(11, 0, 9 / 11, 16, 10000.0, True)
    frame_tokens = _video_table((3, 2, 3), 0, (), (0, 0), 16, 10000.0, True, 4)
    torch.testing.assert_close(tables[0][0], rotary(frames))
    torch.testing.assert_close(tables[0][1], rotary(frame_tokens))
    torch.nn.init.normal_(model.audio_blocks[0].av_cross_attn.split_frames.weight, std=0.2)
    moved = model(video, t, text, audio=audio)
    assert (moved.audio - base.audio).abs().max() > 1e-3


@torch.no_grad()
def test_references_condition_the_clip_and_are_dropped_from_the_output():
    model = tiny_model()
    randomise_av_exchange(model)
    video, t, text, audio = inputs(model)
    refs = References(video=torch.randn(2, 4, 2, 4, 6), audio=torch.randn(2, 4, 5))
    plain = model(video, t, text, audio=audio)
    with_refs = model(video, t, text, audio=audio, references=refs)
    assert with_refs.video.shape == plain.video.shape and with_refs.audio.shape == plain.audio.shape
    assert (with_refs.video - plain.video).abs().max() > 1e-4
    assert (with_refs.audio - plain.audio).abs().max() > 1e-4
    for wrong, stream in ((References(video=torch.randn(2, 16, 1, 4, 6)), "video"),
                          (References(audio=torch.randn(2, 8, 5)), "audio")):  # fmt: skip
        line = f"references: {stream} references of {16 if stream == 'video' else 8} channels for "
        with pytest.raises(InputError, match=f"{line}a model whose {stream} latents have 4"):
            model(video, t, text, audio=audio, references=wrong)  # a torch.cat size error
    silent = tiny_model(audio_latent_channels=None)  # audio references it cannot hear: ignored
    video, t, text, _ = inputs(silent)
    heard = silent(video, t, text, references=References(audio=torch.randn(2, 8, 5)))
    assert torch.equal(heard.video, silent(video, t, text).video)


@torch.no_grad()
def test_high_res_keyframes_ride_in_the_same_sequence():
    model = tiny_model()
    video, t, text, audio = inputs(model)
    keyframes = torch.randn(2, model.config.video_in_channels, 2, 8, 12)
    out = model(video, t, text, audio=audio, keyframes=keyframes, keyframe_indices=[0, 2])
    assert out.keyframes.shape == (2, 4, 2, 8, 12) and out.video.shape == (2, 4, 3, 4, 6)
    with pytest.raises(InputError, match="keyframe_indices"):
        model(video, t, text, audio=audio, keyframes=keyframes, keyframe_indices=[0])


@torch.no_grad()
def test_padding_text_tokens_are_ignored():
    model = tiny_model()
    video, t, text, audio = inputs(model, batch=1)
    padded = TextEncoding(
        torch.cat([text.features, torch.randn(1, 4, text.features.shape[2])], dim=1),
        torch.cat([text.mask, torch.zeros(1, 4, dtype=torch.bool)], dim=1),
    )
    a, b = model(video, t, text, audio=audio), model(video, t, padded, audio=audio)
    assert torch.allclose(a.video, b.video, atol=1e-5) and torch.allclose(
        a.audio, b.audio, atol=1e-5
    )
    for dtype in (torch.float32, torch.int64):  # transformers' attention_mask form: 0/1 numbers
        as_numbers = TextEncoding(padded.features, padded.mask.to(dtype))
        c = model(video, t, as_numbers, audio=audio)
        assert torch.equal(b.video, c.video) and torch.equal(b.audio, c.audio)


@torch.no_grad()
def test_multishot_text_reaches_only_its_frames():
    # One Wan-style block isolates the text cross-attention path: afterwards self-attention would
    # spread a shot's words to every frame, as it should.
    model = tiny_model(
        joint_text=False, num_single_blocks=0, num_dual_blocks=1, audio_latent_channels=None
    )
    video = torch.randn(1, model.config.video_in_channels, 3, 4, 6)
    features = torch.randn(1, 6, model.config.text_dim)
    shots = [(0, 3, 0, 2), (3, 6, 2, 3)]
    text = TextEncoding(features, torch.ones(1, 6, dtype=torch.bool), shots)
    changed = TextEncoding(features.clone(), text.mask, shots)
    changed.features[:, 3:] += 1.0  # the second shot's words only
    t = torch.tensor([0.5])
    a, b = model(video, t, text).video, model(video, t, changed).video
    assert torch.equal(a[:, :, :2], b[:, :, :2])
    assert (a[:, :, 2] - b[:, :, 2]).abs().max() > 1e-4
    # A high-res keyframe reads its own frame's shot (it read every shot, and Refine re-injects it).
    keys = torch.randn(1, model.config.video_in_channels, 2, 8, 12)
    a, b = (model(video, t, x, keyframes=keys, keyframe_indices=[0, 2]) for x in (text, changed))
    assert torch.equal(a.video[:, :, :2], b.video[:, :, :2])
    assert torch.equal(a.keyframes[:, :, 0], b.keyframes[:, :, 0])
    assert (a.keyframes[:, :, 1] - b.keyframes[:, :, 1]).abs().max() > 1e-4


@torch.no_grad()
def test_bf16_forward_stays_close_to_fp32():
    model = tiny_model()
    randomise_av_exchange(model)
    video, t, text, audio = inputs(model)
    reference = model(video, t, text, audio=audio)
    half = model.to(torch.bfloat16)(video.bfloat16(), t, text, audio=audio.bfloat16())
    scale = reference.video.abs().mean()
    assert (half.video.float() - reference.video).abs().mean() < 0.05 * scale
    assert (half.audio.float() - reference.audio).abs().mean() < 0.05 * reference.audio.abs().mean()


def test_wrong_input_channels_name_the_fix():
    model = tiny_model()
    video, t, text, audio = inputs(model)
    with pytest.raises(InputError, match="concat"):
        model(video[:, :4], t, text, audio=audio)


def test_a_latent_size_off_the_patch_grid_and_sound_for_a_silent_model_name_the_fix():
    model = tiny_model()
    video, t, text, audio = inputs(model, height=5)
    with pytest.raises(InputError, match=r"^video: latent size \(3, 5, 6\) does not divide"):
        model(video, t, text, audio=audio)
    silent = DualStreamMMDiT(WAN_TINY)
    video, t, text, _ = inputs(silent)
    with pytest.raises(InputError, match="^audio: this model has no audio stream"):
        silent(video, t, text, audio=audio)


@torch.no_grad()
def test_a_wan_model_reads_a_reference_clip_as_plain_latents():
    """A model without channel-concat inpainting takes clean references as they are (an
    inpainting model takes concat(ref, ref, ones)), prepended before the clip's tokens."""
    torch.manual_seed(0)
    model = DualStreamMMDiT(WAN_TINY).eval()
    video, t, text, _ = inputs(model)
    reference = References(video=torch.randn(2, WAN_TINY.video_latent_channels, 1, 4, 6))
    plain, referenced = model(video, t, text), model(video, t, text, references=reference)
    assert referenced.video.shape == plain.video.shape == (2, 4, 3, 4, 6)
    assert not torch.allclose(referenced.video, plain.video)


def test_a_config_the_blocks_cannot_build_is_refused_by_name():
    with pytest.raises(ValueError, match="^tiny: dim 32 must split into 3 even heads"):
        replace(get_preset("tiny"), num_heads=3)
    with pytest.raises(ValueError, match="^tiny: single-stream blocks need joint_text"):
        replace(get_preset("tiny"), joint_text=False)


def test_parameter_counts_are_exact_for_every_preset():
    for name in ("tiny", "demo", "wan2.1-t2v-1.3b", "skyreels-v4-14b"):
        model = build_on_meta(PRESETS[name])
        actual = sum(p.numel() for p in model.parameters())
        assert actual == PRESETS[name].parameter_counts()["total"], name
    assert abs(PRESETS["wan2.1-t2v-1.3b"].parameter_counts()["total"] / 1e9 - 1.42) < 0.01
    assert abs(PRESETS["wan2.1-t2v-14b"].parameter_counts()["total"] / 1e9 - 14.29) < 0.01


def test_building_the_full_model_on_meta_allocates_nothing():
    model = build_on_meta(get_preset("skyreels-v4-14b"))
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) > 40e9


def test_info_command_prints_counts(capsys):
    from skyreels_core.__main__ import main

    assert main(["info", "--preset", "wan2.1-t2v-14b"]) == 0
    out = capsys.readouterr().out
    # the count itself: "or 'total' in out" passed whatever number was printed
    assert re.search(r"^\s*total\s+14,288,491,584\s+\(14\.29 B\)$", out, re.M), out
    assert main(["info", "--preset", "nope"]) == 2


def test_tiny_model_overfits_one_av_batch():
    torch.manual_seed(0)
    model = DualStreamMMDiT(replace(get_preset("tiny"), dim=64, ffn_dim=128)).train()
    video, _, text, audio = inputs(model)
    x0_video, x0_audio = video[:, :4], audio
    condition = torch.cat([torch.zeros_like(x0_video), torch.zeros_like(x0_video[:, :1])], dim=1)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    noise_v = torch.randn(x0_video.shape, generator=generator)
    noise_a = torch.randn(x0_audio.shape, generator=generator)
    t = torch.tensor([0.3, 0.7])
    losses = []
    for _ in range(150):
        out = model(
            torch.cat([noised(x0_video, noise_v, t), condition], dim=1),
            t,
            text,
            audio=noised(x0_audio, noise_a, t),
        )
        loss = flow_matching_loss(out.video, x0_video, noise_v, out.audio, x0_audio, noise_a)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


def test_training_after_sampling_under_inference_mode():
    # The host samples under torch.inference_mode; cached RoPE tables made there must not leak
    # into a later training step of the same shapes (inference tensors cannot be saved for backward).
    model = DualStreamMMDiT(get_preset("tiny")).train()
    video, t, text, audio = inputs(model)
    with torch.inference_mode():
        model(video, t, text, audio=audio)
    out = model(video, t, text, audio=audio)
    (out.video.square().mean() + out.audio.square().mean()).backward()
    assert model.head.head.weight.grad.abs().sum() > 0


@torch.no_grad()
def test_the_audio_output_is_decoded_from_the_clips_tokens_not_the_references():
    """With an Audio Reference the audio sequence is [reference | clip]: the audio head must read
    the clip's tokens. Reading the first tokens instead decodes the reference's sound as the
    start of the clip whenever a sound reference is connected (without one both are the same)."""
    model = tiny_model()
    video, t, text, audio = inputs(model, audio_tokens=12)
    refs = References(audio=torch.randn(2, 4, 5))
    last = model.audio_single_blocks[-1]
    seen = {}
    original = last.attend

    def spy(*args, **kwargs):
        seen["a_full"], text_out = original(*args, **kwargs)
        return seen["a_full"], text_out

    last.attend = spy
    model.audio_head.register_forward_pre_hook(lambda _, args: seen.update(head_in=args[0]))
    out = model(video, t, text, audio=audio, references=refs)
    assert seen["a_full"].shape == (2, 17, model.config.dim)
    assert torch.equal(seen["head_in"], seen["a_full"][:, 5:])
    assert out.audio.shape == (2, 4, 12)


def test_a_shots_first_latent_frame_reads_only_its_own_text():
    """Shot (tokens 3..6, frames 2..4) starts at latent frame 2: that frame reads shot 2's words
    only, and frame 1 (the end of shot 1, exclusive) reads shot 1's only. An inclusive end would
    let each shot's first frame follow the previous prompt too: the cut bleeds."""
    model = tiny_model()
    shots = [(0, 3, 0, 2), (3, 6, 2, 4)]
    text = TextEncoding(torch.zeros(1, 6, 16), torch.ones(1, 6, dtype=torch.bool), shots)
    mask = model._cross_mask(text, text.mask, 4, 0, (4, 1, 1), (), (0, 0))
    assert mask.shape == (1, 1, 4, 6)
    first, second = [True] * 3 + [False] * 3, [False] * 3 + [True] * 3
    assert mask[0, 0].tolist() == [first, first, second, second]


def test_references_read_every_shot_and_keyframes_their_own_frames_shot():
    """The cross-attention mask over [2 references | 4 clip frames | a 1 x 2 keyframe at latent
    frame 2] for shots (tokens 0..3, frames 0..2) and (3..6, 2..4), the last word padding: the
    references read both shots, each clip frame its own shot, the keyframe's two tokens frame 2's
    shot, and nobody the padding."""
    model = tiny_model()
    shots = [(0, 3, 0, 2), (3, 6, 2, 4)]
    padded = torch.tensor([[True] * 5 + [False]])
    text = TextEncoding(torch.zeros(1, 6, 16), padded, shots)
    mask = model._cross_mask(text, text.mask, 8, 2, (4, 1, 1), (2,), (1, 2))
    every = [True] * 5 + [False]
    first, second = [True] * 3 + [False] * 3, [False] * 3 + [True] * 2 + [False]
    assert mask.shape == (1, 1, 8, 6)
    assert mask[0, 0].tolist() == [every] * 2 + [first] * 2 + [second] * 2 + [second] * 2


@torch.no_grad()
def test_the_audio_phase_feature_is_sin_then_cos_of_the_group_angles():
    """The demo model (and any trained with audio_phase_harmonics) learnt its audio_phase layer on
    [sin | cos] of each token's angle inside its 4-frame latent group: swapping the halves still
    renders, but the model then misplaces every sound inside its group (audio-video sync fell
    from under 62.5 ms to 82 ms). Token 0 sits at angle 0: [0, 0, 0, 0, 1, 1, 1, 1]."""
    from skyreels_core.rope import audio_group_angles

    model = tiny_model(audio_phase_harmonics=4)
    video, t, text, audio = inputs(model, frames=3, audio_tokens=11)
    seen = []
    model.audio_phase.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    model(video, t, text, audio=audio)
    features = seen[0]
    assert features.shape == (11, 8)
    assert features[0].tolist() == [0.0] * 4 + [1.0] * 4
    angles = audio_group_angles(11, 0, 3, 4)
    expected = torch.cat([angles.sin(), angles.cos()], dim=1).float()
    torch.testing.assert_close(features, expected, atol=1e-6, rtol=0)


@torch.no_grad()
def test_joint_text_single_stream_and_references_golden_output():
    """A pinned output of the wiring no other unit test checks by number: joint text tokens with
    their own modulation, single-stream blocks rotating video keys and updating the text,
    two references (at t = -2, -1) with their all-known mask channel that read every shot, the audio phase and the
    audio-video exchange. Values pinned from the code of 2025's audit 6 (seeded, CPU, fp32): a
    change here changes what every trained checkpoint computes, so it must be deliberate."""
    model = tiny_model(num_single_blocks=2, audio_phase_harmonics=2)
    randomise_av_exchange(model)
    video, t, text, audio = inputs(model, frames=3, audio_tokens=11, text_tokens=6)
    text = TextEncoding(text.features, text.mask, [(0, 3, 0, 2), (3, 6, 2, 3)])
    generator = torch.Generator().manual_seed(5)
    refs = References(
        video=torch.randn(2, 4, 2, 4, 6, generator=generator),
        audio=torch.randn(2, 4, 3, generator=generator),
    )
    out = model(video, t, text, audio=audio, references=refs)
    assert out.video.shape == (2, 4, 3, 4, 6) and out.audio.shape == (2, 4, 11)
    pinned = dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.video.abs().sum().item(), 307.93597, **pinned)
    torch.testing.assert_close(out.audio.abs().sum().item(), 29.859867, **pinned)
    torch.testing.assert_close(
        out.video.flatten()[:4], torch.tensor([0.28705296, -0.48910668, 0.19795980, -0.48790744]),
        **pinned,
    )  # fmt: skip
    torch.testing.assert_close(
        out.audio.flatten()[:4], torch.tensor([0.09557608, 0.28247923, -0.13099542, 0.11862400]),
        **pinned,
    )  # fmt: skip


def test_the_timestep_embedding_is_float64_math_where_the_device_has_float64():
    """Wan's reference computes the embedding in float64 (float32 moves a late step's angles by
    3e-5); Apple's GPU has no float64 and refused the cast at the first step, so that device's
    math runs on the CPU and comes back."""
    t = torch.tensor([999.0, 731.25, 0.5])
    half = np.arange(64) / 64
    angles = np.outer(t.numpy().astype(np.float64), 10000.0**-half)
    reference = np.concatenate([np.cos(angles), np.sin(angles)], axis=1)
    embedding = sinusoidal_embedding(t, 128)
    assert embedding.dtype == torch.float32 and embedding.shape == (3, 128)
    assert np.abs(embedding.numpy() - reference).max() < 1e-6
    in_float32 = torch.outer(t, torch.pow(10000, -torch.arange(64) / 64))
    assert np.abs(in_float32.cos().numpy() - reference[:, :64]).max() > 1e-5
    assert float64_device(torch.device("mps")) == torch.device("cpu")
    assert float64_device(torch.device("cuda", 1)) == torch.device("cuda", 1)


@torch.no_grad()
def test_the_sound_reads_its_own_time_through_its_own_embedding_only():
    """``audio_timestep`` None is the picture's time, bit for bit; another time changes the
    sound's output, and the picture's only through the exchange."""
    model = tiny_model()
    randomise_av_exchange(model)
    video, t, text, audio = inputs(model)
    base = model(video, t, text, audio=audio)
    same = model(video, t, text, audio=audio, audio_timestep=t.clone())
    assert torch.equal(same.audio, base.audio) and torch.equal(same.video, base.video)
    behind = model(video, t, text, audio=audio, audio_timestep=(t + 0.3).clamp(max=1))
    assert (behind.audio - base.audio).abs().max() > 1e-3
    assert (behind.video - base.video).abs().max() > 1e-5
    zero_av_exchange(model)
    base = model(video, t, text, audio=audio)
    behind = model(video, t, text, audio=audio, audio_timestep=(t + 0.3).clamp(max=1))
    assert torch.equal(behind.video, base.video)


@pytest.mark.parametrize(
    ("share", "lag", "named"),
    [(1.5, 1.0, "audio_time_share 1.5 not in [0, 1]"), (0.0, 2.0, "audio_lag 2.0 needs 1")],
)
def test_a_sound_lag_without_the_training_for_it_is_refused(share, lag, named):
    with pytest.raises(ValueError, match=re.escape(named)):
        replace(get_preset("tiny"), audio_time_share=share, audio_lag=lag)
    assert replace(get_preset("tiny"), audio_time_share=0.5, audio_lag=2.0).audio_lag == 2.0
