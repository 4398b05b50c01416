"""The dual-stream sampler against fake models with the MMDiT's exact call signature."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from skyreels_core import memory
from skyreels_core.errors import InputError
from skyreels_core.sampling import (
    SamplerHooks,
    SamplerSettings,
    flow_sigmas,
    initial_noise,
    sample,
)
from skyreels_core.types import (
    AVLatent,
    ModelOutput,
    References,
    TextEncoding,
    VideoCondition,
)

B, C_V, T, H, W = 1, 4, 3, 4, 6
C_A, L_A = 5, 7


class FakeModel(torch.nn.Module):
    """Records every call; velocities come from ``field(stream, x, t, text_value)`` where
    ``text_value`` is the first text feature of each batch element."""

    def __init__(
        self,
        field,
        audio_channels: int | None = C_A,
        concat: bool = True,
        audio_time_share: float = 0.0,
        audio_lag: float = 1.0,
    ):
        super().__init__()
        self.config = SimpleNamespace(
            name="fake",
            channel_concat_inpainting=concat,
            audio_latent_channels=audio_channels,
            video_latent_channels=C_V,
            text_dim=8,
            audio_time_share=audio_time_share,
            audio_lag=audio_lag,
        )
        self.field = field
        self.calls: list[dict] = []

    def forward(
        self,
        video,
        timestep,
        text,
        audio=None,
        references=None,
        keyframes=None,
        keyframe_indices=None,
        audio_timestep=None,
    ):
        audio_time = timestep if audio_timestep is None else audio_timestep
        self.calls.append(
            dict(
                video=video.clone(),
                timestep=timestep.clone(),
                text=text,
                audio=None if audio is None else audio.clone(),
                references=references,
                keyframes=None if keyframes is None else keyframes.clone(),
                keyframe_indices=keyframe_indices,
                audio_timestep=None if audio_timestep is None else audio_timestep.clone(),
            )
        )
        t = timestep.view(-1, 1, 1, 1, 1)
        value = text.features[:, 0, 0]
        out_video = self.field("video", video[:, :C_V], t, value.view(-1, 1, 1, 1, 1))
        out_audio = None
        if audio is not None:
            out_audio = self.field("audio", audio, audio_time.view(-1, 1, 1), value.view(-1, 1, 1))
        out_keys = None
        if keyframes is not None:
            out_keys = self.field("keyframes", keyframes[:, :C_V], t, value.view(-1, 1, 1, 1, 1))
        return ModelOutput(out_video, out_audio, out_keys)


def text(value: float = 1.0, length: int = 5) -> TextEncoding:
    return TextEncoding(torch.full((B, length, 8), value), torch.ones(B, length, dtype=torch.bool))


def condition(known_frames: tuple[int, ...] = ()) -> VideoCondition:
    latents = torch.randn(B, C_V, T, H, W)
    mask = torch.zeros(B, 1, T, H, W)
    for frame in known_frames:
        mask[:, :, frame] = 1.0
    latents = latents * mask
    return VideoCondition(latents, mask)


TARGETS = {
    "video": torch.randn(B, C_V, T, H, W),
    "audio": torch.randn(B, C_A, L_A),
    "keyframes": torch.randn(B, C_V, 2, 2 * H, 2 * W),
}


def straight_oracle(stream, x, t, value):
    """The exact velocity towards a fixed x0 from wherever x is: v = (x - x0) / t."""
    return (x - TARGETS[stream]) / t


def settings(**overrides) -> SamplerSettings:
    base = dict(steps=4, shift=5.0, solver="euler", video_guidance=1.0, audio_guidance=1.0)
    return SamplerSettings(**{**base, **overrides})


@pytest.mark.parametrize("solver", ["euler", "unipc", "dpmpp_2m"])
def test_oracle_field_reaches_x0_in_both_streams(solver):
    model = FakeModel(straight_oracle)
    result = sample(
        model,
        text=text(),
        negative_text=None,
        condition=condition(),
        audio_tokens=L_A,
        fps=16.0,
        settings=settings(solver=solver, steps=5),
    )
    torch.testing.assert_close(result.video, TARGETS["video"], atol=1e-5, rtol=0)
    torch.testing.assert_close(result.audio, TARGETS["audio"], atol=1e-5, rtol=0)
    assert result.keyframes is None


@pytest.mark.parametrize("fps", [24.0, 1.0, 1000.0, 0.0, math.nan, 1e-9, 0.999, 1000.5, 1e6])
def test_the_take_carries_the_clip_fps(fps):
    run = dict(text=text(), negative_text=None, condition=condition(), audio_tokens=L_A)
    if fps in (24.0, 1.0, 1000.0):  # both ends of the range are rates a clip can have
        assert sample(FakeModel(straight_oracle), **run, fps=fps, settings=settings()).fps == fps
        return
    named = f"fps: {fps:g} fps. Fix: give the clip's frame rate, 1 to 1000 fps"
    with pytest.raises(InputError, match=f"^{re.escape(named)}$"):
        sample(FakeModel(straight_oracle), **run, fps=fps, settings=settings())


def test_a_script_gets_the_nodes_checks_of_rate_and_family():
    """Only the Sampler node checked these: a script re-rolling the sound of a 24 fps take at
    16 fps got a clip relabelled 16 fps with a sound 1.5x its length, and a prompt of another
    encoder's width crashed inside a matmul."""
    run = dict(negative_text=None, audio_tokens=L_A, settings=settings())
    model = FakeModel(straight_oracle)
    made_at_24 = replace(condition(), fps=24.0)
    with pytest.raises(
        InputError, match="fps: 16 fps for a clip made at 24 fps. Fix: set fps to 24"
    ):
        sample(model, text=text(), condition=made_at_24, fps=16.0, **run)
    assert sample(model, text=text(), condition=made_at_24, fps=24.0, **run).fps == 24.0
    # NTSC's 23.976 is not 24: a second of sound is 0.1 % longer, 1.5 frames a minute
    with pytest.raises(InputError, match="fps: 23.976 fps for a clip made at 24 fps"):
        sample(model, text=text(), condition=made_at_24, fps=23.976, **run)
    wide = TextEncoding(torch.ones(B, 5, 12), torch.ones(B, 5, dtype=torch.bool))
    with pytest.raises(InputError, match="text: 12 text features where this model takes 8"):
        sample(model, text=wide, condition=condition(), fps=16.0, **run)
    initial = AVLatent(video=torch.zeros(B, C_V, T, H, W), audio=torch.zeros(B, C_A, L_A), fps=24.0)
    with pytest.raises(InputError, match="fps: 16 fps for the initial latent made at 24 fps"):
        sample(model, text=text(), condition=condition(), fps=16.0, initial=initial,
               **{**run, "settings": settings(denoise_start=0.5)})  # fmt: skip


def test_guidance_one_makes_exactly_one_call_per_step():
    model = FakeModel(straight_oracle)
    sample(
        model,
        text=text(),
        negative_text=text(0.0),
        condition=condition(),
        audio_tokens=L_A,
        fps=16.0,
        settings=settings(steps=6),
    )
    assert len(model.calls) == 6
    assert [call["video"].shape[0] for call in model.calls] == [B] * 6


@pytest.mark.parametrize(
    ("video_guidance", "audio_guidance", "batched", "calls", "batch"),
    [(4.0, 3.0, True, 3, 2 * B), (4.0, 3.0, False, 6, B), (1.0, 3.0, True, 3, 2 * B)],
)
def test_guided_calls(video_guidance, audio_guidance, batched, calls, batch):
    model = FakeModel(straight_oracle)
    sample(
        model,
        text=text(),
        negative_text=None,
        condition=condition(),
        audio_tokens=L_A,
        fps=16.0,
        settings=settings(
            steps=3,
            video_guidance=video_guidance,
            audio_guidance=audio_guidance,
            batch_guidance=batched,
        ),
    )
    assert len(model.calls) == calls
    assert {call["video"].shape[0] for call in model.calls} == {batch}
    assert {call["audio"].shape[0] for call in model.calls} == {batch}


def test_cfg_zero_star_zero_init_makes_no_call():
    model = FakeModel(straight_oracle)
    sample(
        model,
        text=text(),
        negative_text=None,
        condition=condition(),
        audio_tokens=L_A,
        fps=16.0,
        settings=settings(steps=3, video_guidance=4.0, audio_guidance=3.0, cfg_zero_star=True),
    )
    assert len(model.calls) == 2
    assert model.calls[0]["timestep"][0].item() < 1.0


# A guided render: both branches each step, batched while they fit.
GUIDED = dict(
    text=text(1.0),
    negative_text=text(-0.5),
    condition=condition(),
    audio_tokens=L_A,
    fps=16.0,
    settings=settings(steps=3, video_guidance=4.0, audio_guidance=3.0),
)


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 bytes"),
        RuntimeError("MPS backend out of memory (MPS allocated: 17.80 GiB, other allocations: 0)"),
    ],
)
def test_batched_pass_out_of_memory_falls_back_to_two_passes(error):
    """The GPU's out-of-memory error, or a CPU host's or a Mac's (plain RuntimeErrors), alike."""

    def field(stream, x, t, value):
        if x.shape[0] == 2 * B:
            raise error
        return text_linear(stream, x, t, value)

    model = FakeModel(field)
    result = sample(model, **GUIDED)
    assert [call["video"].shape[0] for call in model.calls] == [2 * B] + [B] * 6
    reference = sample(FakeModel(text_linear), **GUIDED)
    torch.testing.assert_close(result.video, reference.video)
    torch.testing.assert_close(result.audio, reference.audio)


@pytest.mark.parametrize(
    ("backend", "negative_length", "batch"),
    [("sage", 3, B), ("flash_attn", 3, B), ("sage", 5, 2 * B), ("sdpa", 3, 2 * B)],
)
def test_prompts_of_two_lengths_batch_only_where_the_kernel_takes_masks(
    backend, negative_length, batch
):
    """Stacked prompts of two lengths need a padding mask, under which flash_attn and sage
    would run as SDPA: their branches run apart instead, to the same result."""
    model = FakeModel(text_linear)
    model.attention_backend = backend
    run = dict(
        text=text(1.0, length=5),
        negative_text=text(-0.5, length=negative_length),
        condition=condition(),
        audio_tokens=L_A,
        fps=16.0,
        settings=settings(steps=2, video_guidance=4.0, audio_guidance=3.0),
    )
    result = sample(model, **run)
    assert {call["video"].shape[0] for call in model.calls} == {batch}
    assert len(model.calls) == 2 * (2 * B // batch)
    apart = sample(
        FakeModel(text_linear),
        **{
            **run,
            "settings": settings(
                steps=2, video_guidance=4.0, audio_guidance=3.0, batch_guidance=False
            ),
        },
    )
    torch.testing.assert_close(result.video, apart.video)
    torch.testing.assert_close(result.audio, apart.audio)


def text_linear(stream, x, t, value):
    """A velocity linear in the prompt, different per stream: CFG shows up exactly."""
    slope, bias = {"video": (2.0, 0.5), "audio": (-3.0, 1.0), "keyframes": (1.0, 0.0)}[stream]
    return slope * value + bias + 0.0 * x


@pytest.mark.parametrize("batched", [True, False])
def test_cfg_arithmetic_per_stream_through_the_sampler(batched):
    model = FakeModel(text_linear)
    result = sample(
        model,
        text=text(1.0, length=5),
        negative_text=text(-0.5, length=3),
        condition=condition(),
        audio_tokens=L_A,
        fps=16.0,
        settings=settings(
            steps=1, shift=1.0, video_guidance=4.0, audio_guidance=3.0, batch_guidance=batched
        ),
    )
    noise_video, noise_audio = initial_noise(0, [(B, C_V, T, H, W), (B, C_A, L_A)])
    # One Euler step from t = 1 to 0: x = eps - v, v = v_u + s (v_c - v_u) per stream.
    video_v = (2.0 * -0.5 + 0.5) + 4.0 * (2.0 * 1.5)
    audio_v = (-3.0 * -0.5 + 1.0) + 3.0 * (-3.0 * 1.5)
    torch.testing.assert_close(result.video, noise_video - video_v)
    torch.testing.assert_close(result.audio, noise_audio - audio_v)


@pytest.mark.parametrize("tokens", [None, 0, 3])
def test_missing_or_empty_negative_prompt_is_zero_features_with_the_prompt_mask(tokens):
    """No negative, an empty prompt (no token) or an all-padding one: the trained null text."""
    model = FakeModel(text_linear)
    prompt = text(1.0)
    negative = None
    if tokens is not None:
        negative = TextEncoding(
            torch.full((B, tokens, prompt.features.shape[-1]), 5.0),
            torch.zeros(B, tokens, dtype=torch.bool),
        )
    sample(
        model,
        text=prompt,
        negative_text=negative,
        condition=condition(),
        audio_tokens=L_A,
        fps=16.0,
        settings=settings(steps=1, video_guidance=2.0),
    )
    seen = model.calls[0]["text"]
    assert torch.equal(seen.features[1], torch.zeros_like(prompt.features[0]))
    assert torch.equal(seen.mask[1], prompt.mask[0])


@pytest.mark.parametrize("tokens", [0, 3])
def test_an_empty_prompt_reaches_the_model_as_one_null_token_never_all_masked(tokens):
    """A render left without words: with no real token every text key would be masked (0 on one
    backend, NaN on another); the model sees one zero token, as a dropped prompt trains it."""
    model = FakeModel(text_linear)
    empty = TextEncoding(torch.full((B, tokens, 8), 5.0), torch.zeros(B, tokens, dtype=torch.bool))
    sample(
        model,
        text=empty,
        negative_text=text(-0.5, length=3),
        condition=condition(),
        audio_tokens=L_A,
        fps=16.0,
        settings=settings(steps=1, video_guidance=2.0),
    )
    seen = model.calls[0]["text"]
    assert bool(seen.mask.any(dim=1).all())
    assert torch.equal(seen.features[0, :1], torch.zeros(1, 8)) and seen.mask[0].sum() == 1


def test_each_batch_row_without_words_gets_its_own_null_text():
    """Judged per row: in a batch of a worded and an empty prompt (with an empty negative beside
    a worded one), the empty row reaches the model as one null token and the empty negative as its
    prompt's null text, while the worded rows pass unchanged; no row has every key masked."""
    model = FakeModel(text_linear)
    worded = torch.full((1, 3, 8), 2.0)
    prompt = TextEncoding(
        torch.cat([torch.full((1, 3, 8), 5.0), worded]),
        torch.tensor([[False, False, False], [True, True, False]]),
    )
    negative = TextEncoding(
        torch.cat([torch.full((1, 2, 8), -1.0), torch.full((1, 2, 8), 7.0)]),
        torch.tensor([[True, True], [False, False]]),
    )
    latents = torch.zeros(2, C_V, T, H, W)
    sample(
        model,
        text=prompt,
        negative_text=negative,
        condition=VideoCondition(latents, torch.zeros(2, 1, T, H, W)),
        audio_tokens=L_A,
        fps=16.0,
        settings=settings(steps=1, video_guidance=2.0),
    )
    seen = model.calls[0]["text"]  # (prompt rows 0-1, unconditional rows 2-3), batched
    assert bool(seen.mask.any(dim=1).all())
    assert seen.mask[0].sum() == 1 and torch.equal(
        seen.features[0][seen.mask[0]], torch.zeros(1, 8)
    )
    assert torch.equal(seen.features[1, :2], worded[0, :2]) and seen.mask[1].sum() == 2
    assert torch.equal(seen.features[2, :2], torch.full((2, 8), -1.0)) and seen.mask[2].sum() == 2
    assert torch.equal(seen.mask[3], seen.mask[1])  # the prompt's own mask, zero features
    assert not seen.features[3].any()


def test_one_prompt_and_one_reference_serve_every_clip_of_a_batch():
    """A batch of clips with one prompt and one reference (what the nodes make) crashed in the
    model's concatenation; they are shared, and a count that fits neither is named."""
    model = FakeModel(text_linear)
    cond = VideoCondition(torch.zeros(2, C_V, T, H, W), torch.zeros(2, 1, T, H, W))
    refs = References(video=torch.randn(1, C_V, 1, H, W), audio=torch.randn(1, C_A, 3))
    run = dict(
        condition=cond, audio_tokens=L_A, fps=16.0, settings=settings(steps=1, video_guidance=2.0)
    )
    result = sample(model, text=text(1.0), negative_text=text(-1.0), references=refs, **run)
    assert result.video.shape[0] == 2
    seen = model.calls[0]
    assert seen["text"].features.shape[0] == 4  # (prompt, negative) x 2 clips
    assert torch.equal(seen["references"].video, refs.video.expand(4, -1, -1, -1, -1))
    three = TextEncoding(torch.ones(3, 5, 8), torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(InputError, match="^text: a batch of 3 for a batch of 2 clips"):
        sample(model, text=three, negative_text=None, **run)


def wavy(stream, x, t, value):
    return torch.sin(3 * x) + value


@pytest.mark.parametrize("solver", ["euler", "unipc", "dpmpp_2m"])
def test_known_latents_are_bit_identical_and_on_their_noised_path(solver):
    model = FakeModel(wavy)
    cond = replace(condition(known_frames=(0, 2)), clip_frames=8)  # a clip held to 9 frames
    # Seed 1: the test's torch.manual_seed(0) drew the condition's latents from seed 0's stream,
    # which made them the noise itself, so every point of their noised path was the same.
    result = sample(
        model,
        text=text(),
        negative_text=None,
        condition=cond,
        audio_tokens=L_A,
        fps=16.0,
        settings=settings(solver=solver, steps=5, video_guidance=3.0, seed=1),
    )
    known = cond.known_mask.expand_as(cond.latents) == 1
    assert torch.equal(result.video[known], cond.latents[known])
    assert result.clip_frames == result.frames == 8  # the decoders trim to the clip
    assert not torch.equal(result.video[~known], cond.latents[~known])
    noise = initial_noise(1, [(B, C_V, T, H, W), (B, C_A, L_A)])[0]
    assert not torch.allclose(noise[known], cond.latents[known])
    for call in model.calls:
        t = call["timestep"][0].item()
        noisy, given, mask = (
            call["video"][:B, :C_V],
            call["video"][:B, C_V:-1],
            call["video"][:B, -1:],
        )
        assert torch.equal(given, cond.latents) and torch.equal(mask, cond.known_mask)
        torch.testing.assert_close(
            noisy[known], ((1 - t) * cond.latents + t * noise)[known], atol=1e-6, rtol=0
        )


def test_without_channel_concat_the_model_sees_only_the_noisy_video():
    model = FakeModel(wavy, concat=False)
    sample(
        model,
        text=text(),
        negative_text=None,
        condition=condition(known_frames=(0,)),
        audio_tokens=L_A,
        fps=16.0,
        settings=settings(steps=1),
    )
    assert model.calls[0]["video"].shape == (B, C_V, T, H, W)


def run_seed(seed: int) -> AVLatent:
    return sample(
        FakeModel(wavy),
        text=text(),
        negative_text=None,
        condition=condition(),
        audio_tokens=L_A,
        fps=16.0,
        settings=settings(seed=seed, solver="unipc"),
    )


def test_seed_determinism():
    torch.manual_seed(1)
    first = run_seed(7)
    torch.manual_seed(2)
    again = run_seed(7)
    other = run_seed(8)
    assert torch.equal(first.video, again.video) and torch.equal(first.audio, again.audio)
    assert (first.video - other.video).abs().mean() > 0.1
    assert (first.audio - other.audio).abs().mean() > 0.1


def test_noise_comes_from_a_cpu_generator_video_first():
    generator = torch.Generator().manual_seed(11)
    video = torch.randn(2, 3, generator=generator)
    audio = torch.randn(4, generator=generator)
    drawn = initial_noise(11, [(2, 3), (4,)])
    assert torch.equal(drawn[0], video) and torch.equal(drawn[1], audio)
    assert torch.equal(initial_noise(11, [(2, 3)])[0], video)


def test_hooks_progress_and_preview_every_step():
    progress, previews = [], []
    sample(
        FakeModel(straight_oracle),
        text=text(),
        negative_text=None,
        condition=condition(),
        audio_tokens=L_A,
        fps=16.0,
        settings=settings(steps=4, solver="unipc"),
        hooks=SamplerHooks(
            progress=lambda step, total: progress.append((step, total)),
            preview=lambda step, x0: previews.append((step, x0)),
        ),
    )
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [step for step, _ in previews] == [1, 2, 3, 4]
    for _, estimate in previews:
        torch.testing.assert_close(estimate, TARGETS["video"], atol=1e-5, rtol=0)


def test_interrupt_stops_between_steps_and_propagates():
    class Stop(Exception):
        pass

    checks = []

    def interrupt():
        checks.append(len(checks))
        if len(checks) == 3:
            raise Stop

    model = FakeModel(straight_oracle)
    done = []
    with pytest.raises(Stop):
        sample(
            model,
            text=text(),
            negative_text=None,
            condition=condition(),
            audio_tokens=L_A,
            fps=16.0,
            settings=settings(steps=10, video_guidance=2.0),
            hooks=SamplerHooks(progress=lambda s, n: done.append(s), interrupt=interrupt),
        )
    assert len(model.calls) == 2 and done == [1, 2]


def test_keyframes_mode_shapes_and_inputs():
    model = FakeModel(straight_oracle)
    refs = References(video=torch.randn(B, C_V, 1, H, W), audio=torch.randn(B, C_A, 3))
    result = sample(
        model,
        text=text(),
        negative_text=None,
        condition=condition(known_frames=(1,)),
        audio_tokens=L_A,
        fps=16.0,
        settings=settings(steps=3, video_guidance=2.0),
        references=refs,
        keyframe_indices=[2, 0],
        keyframe_scale=2,
    )
    assert result.video.shape == (B, C_V, T, H, W)
    assert result.audio.shape == (B, C_A, L_A)
    assert result.keyframes.shape == (B, C_V, 2, 2 * H, 2 * W)
    assert result.keyframe_indices == [0, 2]
    torch.testing.assert_close(result.keyframes, TARGETS["keyframes"], atol=1e-5, rtol=0)
    call = model.calls[0]
    assert call["keyframe_indices"] == [0, 2]
    assert call["keyframes"].shape == (2 * B, 2 * C_V + 1, 2, 2 * H, 2 * W)
    assert torch.equal(call["keyframes"][:, C_V:], torch.zeros(2 * B, C_V + 1, 2, 2 * H, 2 * W))
    assert call["references"].video.shape == (2 * B, C_V, 1, H, W)
    assert torch.equal(call["references"].audio[B:], refs.audio)


@pytest.mark.parametrize(("batched", "passes"), [(True, 2), (False, 1)])
def test_room_is_asked_once_for_the_largest_pass_before_the_first_step(batched, passes):
    model = FakeModel(straight_oracle)
    asked_for = []
    model.activation_bytes = lambda *args, least=False: least or asked_for.append(args) or 1234
    reserved = []
    refs = References(video=torch.randn(B, C_V, 1, H, W), audio=torch.randn(B, C_A, 3))
    sample(
        model,
        text=text(length=5),
        negative_text=text(0.0, length=3),
        condition=condition(),
        audio_tokens=L_A,
        fps=16.0,
        settings=settings(steps=3, video_guidance=2.0, batch_guidance=batched),
        references=refs,
        keyframe_indices=[0, 2],
        keyframe_scale=2,
        hooks=SamplerHooks(
            reserve=lambda device, size: reserved.append((device, size, len(model.calls)))
        ),
    )
    assert reserved == [(torch.device("cpu"), 1234, 0)]  # once, before any model call
    clip, keyframes, reference = (B, C_V, T, H, W), (B, C_V, 2, 2 * H, 2 * W), (B, C_V, 1, H, W)
    # The stacked prompts pad to the longer one; the references' audio adds to the clip's.
    assert asked_for == [([clip, keyframes, reference], L_A + 3, 5, passes * B)]


def counted_model(least_per_item: int) -> FakeModel:
    """A model whose passes are counted to take at least ``least_per_item`` bytes per batch item
    (and ten times that as the room a host should make)."""
    model = FakeModel(text_linear)
    model.activation_bytes = lambda video, audio, text, batch, least=False: (
        batch * least_per_item * (1 if least else 10)
    )
    return model


@pytest.mark.parametrize(
    ("available", "batch"), [(None, 2 * B), (2000 * B, 2 * B), (2000 * B - 1, B), (1000 * B, B)]
)
def test_on_the_cpu_the_guidance_branches_run_apart_where_both_would_not_fit_in_ram(
    monkeypatch, available, batch
):
    """Linux raises no out-of-memory error to fall back on (its OOM killer ends ComfyUI), so the
    batched pass is given up beforehand, for the same render."""
    monkeypatch.setattr(memory, "available_ram", lambda: available)
    model = counted_model(1000)
    result = sample(model, **GUIDED)
    assert {call["video"].shape[0] for call in model.calls} == {batch}
    assert len(model.calls) == 3 * (2 * B // batch)
    apart = sample(
        FakeModel(text_linear),
        **{**GUIDED, "settings": replace(GUIDED["settings"], batch_guidance=False)},
    )
    torch.testing.assert_close(result.video, apart.video)
    torch.testing.assert_close(result.audio, apart.audio)


def test_on_the_cpu_a_render_whose_single_pass_cannot_fit_in_ram_is_refused_before_it_starts(
    monkeypatch,
):
    monkeypatch.setattr(memory, "available_ram", lambda: 3 * 2**30 - 1)
    model = counted_model(3 * 2**30)
    with pytest.raises(InputError) as refused:
        sample(model, **GUIDED, keyframe_indices=[0, 2])
    assert str(refused.value) == (
        "condition: sampling 9 frames of 48 x 32 px and 2 keyframes on the CPU needs at least "
        "3.0 GiB of memory, and 3.0 GiB (RAM and free swap) is available. Fix: fewer frames or a "
        "smaller size (the mask node's), fewer keyframes or references, or a machine with a GPU"
    )
    assert model.calls == []
    monkeypatch.setattr(memory, "available_ram", lambda: 3 * 2**30)
    assert sample(model, **GUIDED).video.shape == (B, C_V, T, H, W)


def test_refinement_starts_from_the_initial_latents_noised_to_start():
    model = FakeModel(straight_oracle)
    initial = AVLatent(video=TARGETS["video"].clone(), audio=TARGETS["audio"].clone())
    result = sample(
        model,
        text=text(),
        negative_text=None,
        condition=condition(),
        audio_tokens=L_A,
        fps=16.0,
        settings=settings(steps=3, denoise_start=0.4, solver="dpmpp_2m"),
        initial=initial,
    )
    noise_video, noise_audio = initial_noise(0, [(B, C_V, T, H, W), (B, C_A, L_A)])
    first = model.calls[0]
    assert first["timestep"].tolist() == pytest.approx([0.4])
    torch.testing.assert_close(first["video"][:, :C_V], 0.6 * initial.video + 0.4 * noise_video)
    torch.testing.assert_close(first["audio"], 0.6 * initial.audio + 0.4 * noise_audio)
    torch.testing.assert_close(result.video, initial.video, atol=1e-5, rtol=0)


def test_refinement_without_initial_latents_is_an_input_error():
    with pytest.raises(InputError) as error:
        sample(
            FakeModel(straight_oracle),
            text=text(),
            negative_text=None,
            condition=condition(),
            audio_tokens=L_A,
            fps=16.0,
            settings=settings(denoise_start=0.5),
        )
    assert error.value.input_name == "denoise_start"


@pytest.mark.parametrize("solver", ["euler", "unipc", "dpmpp_2m"])
def test_a_given_schedule_is_the_one_the_model_is_called_at(solver):
    """``sigmas`` replaces steps, shift and denoise_start: the widgets' own schedule given outright
    renders bit for bit what they do (to float32's rounding of the times, as the host's sigma
    nodes hold them); any other is stepped through time by time, and one
    starting below 1 refines ``initial`` exactly as denoise_start does."""

    def render(initial=None, **overrides):
        model = FakeModel(wavy)
        result = sample(model, text=text(), negative_text=None, condition=condition(),
                        audio_tokens=L_A, fps=16.0, settings=settings(solver=solver, **overrides),
                        initial=initial)  # fmt: skip
        return result, [call["timestep"].item() for call in model.calls]

    own, own_times = render(steps=6, shift=3.0)
    given, given_times = render(steps=50, shift=1.0, sigmas=flow_sigmas(6, 3.0))
    assert given_times == own_times
    assert torch.equal(given.video, own.video) and torch.equal(given.audio, own.audio)
    rounded, _ = render(sigmas=flow_sigmas(6, 3.0).float())  # the host's sigma nodes: float32
    torch.testing.assert_close(rounded.video, own.video, rtol=0, atol=1e-5)

    _, times = render(sigmas=[1.0, 0.9375, 0.8333, 0.625, 0.0])
    assert times == pytest.approx([1.0, 0.9375, 0.8333, 0.625], abs=1e-7)
    # 5 times are 4 steps: the step cache stands in for step 3 and the last step still runs
    assert settings(sigmas=[1.0, 0.9375, 0.8333, 0.625, 0.0]).steps == 4
    _, times = render(sigmas=[1.0, 0.9375, 0.8333, 0.625, 0.0], cache_threshold=1e9)
    assert times == pytest.approx([1.0, 0.9375, 0.625], abs=1e-7)

    start = AVLatent(video=TARGETS["video"].clone(), audio=TARGETS["audio"].clone())
    by_widget, _ = render(initial=start, steps=3, shift=5.0, denoise_start=0.4)
    by_schedule, times = render(initial=start, sigmas=flow_sigmas(3, 5.0, 0.4))
    assert times[0] == pytest.approx(0.4)
    assert torch.equal(by_schedule.video, by_widget.video)
    with pytest.raises(InputError, match="^sigmas: starting at 0.4 needs latents") as error:
        render(sigmas=flow_sigmas(3, 5.0, 0.4))
    assert "start the schedule at 1" in error.value.fix


def test_video_only_model_returns_no_audio_and_checks_audio_tokens():
    model = FakeModel(straight_oracle, audio_channels=None)
    result = sample(
        model,
        text=text(),
        negative_text=None,
        condition=condition(),
        audio_tokens=None,
        fps=16.0,
        settings=settings(steps=2),
    )
    assert result.audio is None and model.calls[0]["audio"] is None
    with pytest.raises(InputError):
        sample(
            FakeModel(straight_oracle),
            text=text(),
            negative_text=None,
            condition=condition(),
            audio_tokens=None,
            fps=16.0,
            settings=settings(),
        )


def test_keyframe_outside_the_clip_is_an_input_error():
    with pytest.raises(InputError, match="keyframe_indices"):
        sample(
            FakeModel(straight_oracle),
            text=text(),
            negative_text=None,
            condition=condition(),
            audio_tokens=L_A,
            fps=16.0,
            settings=settings(),
            keyframe_indices=[T],
        )


def _task_conditions() -> dict[str, VideoCondition]:
    from codec_helpers import PoolingCodec

    from skyreels_core import masks

    codec = PoolingCodec(latent_channels=4)
    clip = torch.rand(9, 32, 48, 3, generator=torch.Generator().manual_seed(3))
    box = torch.zeros(32, 48)
    box[8:24, 16:40] = 1.0
    return {
        "t2av": masks.text_to_video(codec, 9, 32, 48),
        "i2av": masks.image_to_video(codec, clip[0], 9),
        "extend": masks.extend_video(codec, clip, 9, known_frames=5),
        "interpolate": masks.interpolate(codec, clip[0], clip[-1], 9),
        "keyframes": masks.keyframes(codec, {0: clip[0], 4: clip[4]}, 9),
        "edit": masks.edit_video(codec, clip, box),
    }


@pytest.mark.parametrize("task", ["t2av", "i2av", "extend", "interpolate", "keyframes", "edit"])
def test_tiny_model_end_to_end_for_every_task(task):
    from model_helpers import tiny_model

    model = tiny_model()
    cond = _task_conditions()[task]
    config = model.config
    prompt = TextEncoding(torch.randn(1, 6, config.text_dim), torch.ones(1, 6, dtype=torch.bool))
    refs = References(video=torch.randn(1, 4, 1, 4, 6), audio=torch.randn(1, 4, 3))
    calls = []
    model.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    result = sample(
        model,
        text=prompt,
        negative_text=None,
        condition=cond,
        audio_tokens=11,
        fps=16.0,
        settings=SamplerSettings(steps=2, seed=5),
        references=refs,
        keyframe_indices=[0, 2] if task == "t2av" else (),
    )
    assert result.video.shape == (1, 4, 3, 4, 6) == cond.latents.shape
    assert result.audio.shape == (1, config.audio_latent_channels, 11)
    assert torch.isfinite(result.video).all() and torch.isfinite(result.audio).all()
    known = cond.known_mask.expand_as(cond.latents) == 1
    assert torch.equal(result.video[known], cond.latents[known])
    assert calls == [2, 2]  # one batched (prompt, null prompt) pass per step
    if task == "t2av":
        assert result.keyframes.shape == (1, 4, 2, 8, 12) and result.keyframe_indices == [0, 2]
        assert torch.isfinite(result.keyframes).all()
    else:
        assert result.keyframes is None


@pytest.mark.parametrize(
    ("dtype", "fix"),
    [(torch.float32, "check the model file and the inputs"), (torch.float16, "bf16 or fp32")],
)
def test_a_non_finite_prediction_stops_the_render_at_its_step(dtype, fix):
    calls = []

    def overflows_on_third_call(stream, x, t, value):
        calls.append(stream)
        velocity = straight_oracle(stream, x.float(), t.float(), value).to(x.dtype)
        return velocity * float("inf") if len(calls) > 4 else velocity  # video + audio per call

    model = FakeModel(overflows_on_third_call)
    model.weight = torch.nn.Parameter(torch.zeros(1, dtype=dtype))  # the dtype it computes in
    progress = []
    with pytest.raises(InputError, match=f"step 3 of 6 is not finite.*Fix: .*{fix}"):
        sample(
            model,
            text=text(),
            negative_text=None,
            condition=condition(),
            audio_tokens=L_A,
            fps=16.0,
            settings=settings(steps=6),
            hooks=SamplerHooks(progress=lambda done, total: progress.append(done)),
        )
    assert progress == [1, 2]


def test_an_initial_takes_its_keyframes_only_for_the_frames_they_were_made_for():
    """A take's keyframes made for latent frame 1, started from for frame 2 (same count and
    size): the keyframe stream would begin at another frame's picture. They are upsampled from
    the take's own frame 2 instead."""
    from skyreels_core.objective import noised
    from skyreels_core.sampling.sampler import _start_latents

    video = torch.randn(1, C_V, T, H, W, generator=torch.Generator().manual_seed(3))
    keyframes = torch.full((1, C_V, 1, 2 * H, 2 * W), 7.0)
    initial = AVLatent(video=video, keyframes=keyframes, keyframe_indices=[1])
    noise = [torch.randn(1, C_V, T, H, W), torch.randn(1, C_V, 1, 2 * H, 2 * W)]
    for indices, clean in (
        ([1], keyframes),
        ([2], torch.nn.functional.interpolate(video[:, :, [2]], size=(1, 2 * H, 2 * W), mode="trilinear")),
    ):  # fmt: skip
        start = _start_latents(initial, noise, 0.5, False, indices)
        torch.testing.assert_close(start[-1], noised(clean, noise[-1], 0.5), rtol=0, atol=0)


def test_step_cache_off_calls_the_model_at_every_step_as_before():
    plain, cached = FakeModel(wavy), FakeModel(wavy)
    run = dict(text=text(), negative_text=None, condition=condition(), audio_tokens=L_A, fps=16.0)
    a = sample(plain, **run, settings=settings(steps=8))
    b = sample(cached, **run, settings=settings(steps=8, cache_threshold=0.0))
    assert torch.equal(a.video, b.video) and torch.equal(a.audio, b.audio)
    assert len(plain.calls) == len(cached.calls) == 8


@pytest.mark.parametrize("steps, warmup", [(20, 3), (30, 5)])  # 15 % of the steps, rounded up
def test_step_cache_stands_in_with_the_last_velocity_after_warmup_and_runs_the_last_step(
    steps, warmup
):
    """On a straight path the velocity never changes: after the warm-up every step but the last
    reuses it, and the result is still exact."""
    from skyreels_core.sampling import flow_sigmas

    model = FakeModel(straight_oracle)
    result = sample(model, text=text(), negative_text=None, condition=condition(),
                    audio_tokens=L_A, fps=16.0, settings=settings(steps=steps, cache_threshold=0.5))  # fmt: skip
    sigmas = flow_sigmas(steps, 5.0).tolist()
    called = [call["timestep"][0].item() for call in model.calls]
    assert called == pytest.approx(sigmas[:warmup] + [sigmas[steps - 1]])
    torch.testing.assert_close(result.video, TARGETS["video"], atol=1e-5, rtol=0)
    torch.testing.assert_close(result.audio, TARGETS["audio"], atol=1e-5, rtol=0)


def test_step_cache_skips_where_the_output_drifts_slowly_and_keeps_known_latents():
    """A curved field: some steps skip, fewer the lower the threshold, and the given latents
    stay bit-identical whether the model ran or not."""
    cond = condition(known_frames=(0,))
    known = cond.known_mask.expand_as(cond.latents) == 1
    counts = []
    for threshold in (0.0, 0.05, 0.5):
        model = FakeModel(wavy)
        result = sample(model, text=text(), negative_text=None, condition=cond, audio_tokens=L_A, fps=16.0,
                        settings=settings(steps=20, cache_threshold=threshold))  # fmt: skip
        assert torch.equal(result.video[known], cond.latents[known])
        counts.append(len(model.calls))
    assert counts[0] == 20 and 4 <= counts[2] < counts[1] < 20  # measured 20, 14, 7


def test_step_cache_stand_in_extends_the_last_two_velocities_in_sigma():
    """Velocities linear in the noise level are predicted exactly at a skipped step, each
    stream's in its own level (the sound behind the picture: σ_a = 1 - (1 - σ)²)."""
    from skyreels_core.sampling.step_cache import StepCache

    a, b = torch.randn(2, 3), torch.randn(2, 3)

    def times(sigma: float) -> list[float]:
        return [sigma, 1 - (1 - sigma) ** 2]

    cache = StepCache(threshold=1e9, warmup=3)
    for index, sigma in enumerate((1.0, 0.9, 0.75)):
        latents = [torch.full((2, 3), t) for t in times(sigma)]
        assert cache.reuse(index, latents, times(sigma)) is None  # warm-up
        cache.store(latents, [a + b * t for t in times(sigma)], times(sigma))
    video, audio = cache.reuse(3, [torch.full((2, 3), t) for t in times(0.6)], times(0.6))
    torch.testing.assert_close(video, a + b * 0.6, atol=1e-6, rtol=0)
    torch.testing.assert_close(audio, a + b * 0.84, atol=1e-6, rtol=0)
    assert cache.skipped == [3]


def test_step_cache_skips_exactly_the_steps_its_rule_predicts():
    """EasyCache's rule on a field with a known transformation rate: latents σ, velocity 2 + 4σ,
    so the rate is 4 and the output's size at the last computed step c is 2 + 4σ_c. A skipped
    step i adds 4 |x_i - x_c| / (2 + 4σ_c) to the predicted change, and the model runs once the
    sum reaches 0.2. At 20 steps (Δσ = 0.05) after c = 1 that is 0.2 / 5.8, 0.4 / 5.8 (sum 0.10,
    skip), then 0.6 / 5.8 (sum 0.21, run). Measuring against the latents' size, or forgetting
    the steps already skipped, changes which steps run and so the quality of every cached render."""
    from skyreels_core.sampling.step_cache import StepCache

    cache = StepCache(threshold=0.2, warmup=2)
    computed = []
    for index in range(20):
        sigma = 1 - index / 20
        latents = [torch.full((2, 3), sigma)]
        if cache.reuse(index, latents, [sigma]) is None:
            computed.append(index)
            cache.store(latents, [torch.full((2, 3), 2 + 4 * sigma)], [sigma])
    assert computed == [0, 1, 4, 7, 10, 13, 16, 18]
    assert cache.skipped == [2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 19]


def test_step_cache_runs_the_model_once_the_predicted_change_reaches_the_threshold():
    """EasyCache reuses only while the summed predicted change stays below the threshold: at
    exactly the threshold the model runs. Rate 1 (output 1 -> 2 for latents 0 -> 1), output
    size 2: latents 1.5 predict 0.25 each time, so the second such step sums to 0.5 and runs."""
    from skyreels_core.sampling.step_cache import StepCache

    cache = StepCache(threshold=0.5, warmup=0)
    cache.store([torch.full((2, 3), 0.0)], [torch.full((2, 3), 1.0)], [1.0])
    cache.store([torch.full((2, 3), 1.0)], [torch.full((2, 3), 2.0)], [0.8])
    assert cache.reuse(2, [torch.full((2, 3), 1.5)], [0.6]) is not None  # 0.25: skipped
    assert cache.reuse(3, [torch.full((2, 3), 1.5)], [0.4]) is None  # 0.25 + 0.25 = 0.5: runs
    assert cache.skipped == [2]


def test_a_multi_shot_prompt_for_a_shorter_clip_is_refused_and_a_longer_story_read_from_its_start():
    """Shots bound to 5 frames on a 9-frame clip (T = 3 latents) would leave the last latent
    frame attending no text: the Sampler names the input and the length to set. A story written
    for a longer clip is read from its opening (the first window of Extend to Length's story),
    or from the frame a window continuing the clip starts at (Continue Clip's story_start)."""

    def shots(end: int) -> TextEncoding:
        encoding = text(length=4)
        return TextEncoding(encoding.features, encoding.mask, [(0, 2, 0, 1), (2, 4, 1, end)])

    def render(**texts):
        return sample(FakeModel(straight_oracle), condition=condition(), audio_tokens=L_A, fps=16.0,
                      settings=settings(steps=1), **{"negative_text": None, **texts})  # fmt: skip

    render(text=shots(T), negative_text=shots(T))
    with pytest.raises(
        InputError, match="^text: a multi-shot prompt written for 5 frames, on a clip of 9"
    ):
        render(text=shots(2))
    with pytest.raises(
        InputError, match="^negative: .* Fix: set Multi-Shot Text Encode's frames to 9"
    ):
        render(text=text(), negative_text=shots(2))
    model = FakeModel(straight_oracle)
    sample(model, text=shots(6), negative_text=None, condition=condition(), audio_tokens=L_A, fps=16.0,
           settings=settings(steps=1))  # fmt: skip
    assert model.calls[0]["text"].shot_ranges == [(0, 2, 0, 1), (2, 4, 1, T)]
    continued = replace(condition(), story_start=4)  # a window continuing a clip at its frame 4
    model = FakeModel(straight_oracle)
    sample(model, text=shots(6), negative_text=shots(6), condition=continued, audio_tokens=L_A,
           fps=16.0, settings=settings(steps=1, video_guidance=2.0))  # fmt: skip
    # latents 1-3 of the story: a window Continue Clip made replayed the story's opening; the
    # negative story read alike, so the guidance branches still batch (one call of two)
    assert [call["text"].shot_ranges for call in model.calls] == [[(2, 4, 0, T)]]
    assert model.calls[0]["video"].shape[0] == 2 * B
    # shots written for the window's own length repeat in every window, wherever it starts
    model = FakeModel(straight_oracle)
    sample(model, text=shots(T), negative_text=None, condition=continued, audio_tokens=L_A,
           fps=16.0, settings=settings(steps=1))  # fmt: skip
    assert model.calls[0]["text"].shot_ranges == [(0, 2, 0, 1), (2, 4, 1, T)]


def test_references_made_at_another_size_than_the_clip_are_refused_by_name():
    """A reference node left at its default size on a clip of another size fails with the input
    and the fix, not deep in the model's rotary embedding."""
    run = dict(text=text(), negative_text=None, condition=condition(), audio_tokens=L_A, fps=16.0,
               settings=settings(steps=1))  # fmt: skip
    references = References(video=torch.randn(B, C_V, 1, H, H))
    with pytest.raises(InputError, match="^references: made at 32 x 32 px for a clip of 48 x 32"):
        sample(FakeModel(straight_oracle), references=references, **run)
    short = References(video=torch.randn(B, C_V, 1, H // 2, W))  # the width alone matches
    with pytest.raises(InputError, match="^references: made at 48 x 16 px for a clip of 48 x 32"):
        sample(FakeModel(straight_oracle), references=short, **run)


@pytest.mark.parametrize("solver", ["euler", "unipc", "dpmpp_2m"])
def test_the_sound_behind_the_picture_runs_its_own_times_and_lands(solver):
    """A model trained with a time of its own for the sound samples it behind the picture: each
    call gets the picture's time and the sound's lagged one, and the oracle, exact only when the
    sound's velocity is read at the sound's time, reaches both targets. A lag of 1 asks nothing
    of the model: no audio time is passed."""
    model = FakeModel(straight_oracle, audio_time_share=0.5, audio_lag=2.0)
    run = dict(text=text(), negative_text=None, condition=condition(), audio_tokens=L_A, fps=16.0)
    result = sample(model, **run, settings=settings(solver=solver, steps=5))
    torch.testing.assert_close(result.video, TARGETS["video"], atol=1e-5, rtol=0)
    torch.testing.assert_close(result.audio, TARGETS["audio"], atol=1e-5, rtol=0)
    schedule = settings(steps=5).schedule()
    assert [call["timestep"].item() for call in model.calls] == pytest.approx(schedule[:-1])
    sound = [1 - (1 - sigma) ** 2 for sigma in schedule[:-1]]
    heard = [call["audio_timestep"] for call in model.calls]
    assert heard[0] is None  # both start from noise: one time
    assert [time.item() for time in heard[1:]] == pytest.approx(sound[1:])
    assert sound[2] > schedule[2] + 0.05  # behind, not beside
    model.calls.clear()
    sample(model, **run, settings=settings(solver=solver, steps=5, audio_lag=1.0))
    assert all(call["audio_timestep"] is None for call in model.calls)


@pytest.mark.parametrize(
    ("lag", "model", "named"),
    [
        (2.0, FakeModel(straight_oracle), "audio_lag: 2 for fake, trained with one time for both"),
        (0.5, FakeModel(straight_oracle, audio_time_share=0.5), "audio_lag: 0.5. Fix: give 1"),
    ],
)
def test_a_lag_the_model_cannot_take_is_refused_by_name(lag, model, named):
    run = dict(text=text(), negative_text=None, condition=condition(), audio_tokens=L_A, fps=16.0)
    with pytest.raises(InputError, match=f"^{re.escape(named)}"):
        sample(model, **run, settings=settings(audio_lag=lag))
    assert not model.calls
