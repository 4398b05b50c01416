"""Multi-task training: every task trains through the inference builders; checkpoints resume."""

from __future__ import annotations

import copy
import dataclasses
from types import SimpleNamespace

import pytest
import torch
from codec_helpers import PoolingCodec
from model_helpers import tiny_model

from skyreels_core import training
from skyreels_core.tasks import TASK_WEIGHTS
from skyreels_core.training import Batch, adamw, load_checkpoint, save_checkpoint, training_loss
from skyreels_core.types import TextEncoding


def _batch(keyframes: bool = False, frames: int = 9):
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, frames, 32, 32, 3, generator=generator)
    codec = PoolingCodec()
    text = TextEncoding(
        torch.randn(2, 5, 16, generator=generator), torch.ones(2, 5, dtype=torch.bool)
    )
    latents = codec.encode(pixels)
    high = torch.randn(2, 4, latents.shape[2], 8, 8, generator=generator) if keyframes else None
    return codec, Batch(
        pixels, latents, torch.randn(2, 4, 12, generator=generator), text, keyframe_latents=high
    )


@pytest.mark.parametrize("keyframes", [False, True])
def test_every_task_gives_a_finite_loss_with_gradients(keyframes, monkeypatch):
    monkeypatch.setattr(training, "KEYFRAME_SHARE", 1.0)  # every step that can, with keyframes
    model = tiny_model().train()
    codec, batch = _batch(keyframes)
    for task in TASK_WEIGHTS:
        model.zero_grad()
        loss, used = training_loss(model, codec, batch, torch.Generator().manual_seed(1), task)
        loss.backward()
        assert used == task and torch.isfinite(loss) and loss.item() > 0
        assert model.patch_embedding.weight.grad.abs().sum() > 0


def test_a_share_of_steps_generates_high_res_keyframes_as_the_sampler_does():
    """The Sampler's joint pass (low-res clip + high-res keyframes) is trained: half the
    steps of a batch that carries high-res latents add 1-2 keyframes at latent frames no clip
    keeps from its condition (the first one in image-to-video), noised at the clip's time with
    all-zero condition channels, as the Sampler feeds them, and never in a spatial edit."""
    codec, batch = _batch(keyframes=True)
    channels = batch.video_latents.shape[1]
    spy = _Spy(channels)
    for seed in range(200):
        training_loss(spy, codec, batch, torch.Generator().manual_seed(seed), "i2av")
    with_keyframes = [call for call in spy.calls if call.keyframes is not None]
    assert 0.4 < len(with_keyframes) / len(spy.calls) < 0.6
    counts = {len(call.keyframe_indices) for call in with_keyframes}
    assert counts == {1, 2}
    frames = batch.video_latents.shape[2]
    assert {i for call in with_keyframes for i in call.keyframe_indices} == set(range(1, frames))
    for call in with_keyframes:
        indices = call.keyframe_indices
        assert indices == sorted(indices)
        assert call.keyframes.shape == (2, 2 * channels + 1, len(indices), 8, 8)
        assert not call.keyframes[:, channels:].any()  # no high-res condition: all unknown
        x0 = batch.keyframe_latents[:, :, indices]
        t = call.t.reshape(-1, 1, 1, 1, 1)
        noise = (call.keyframes[:, :channels] - (1 - t) * x0) / t
        assert 0.8 < noise.std() < 1.2  # the clean keyframes on the noise path at the clip's t
    spy.calls.clear()
    for seed in range(40):
        training_loss(spy, codec, batch, torch.Generator().manual_seed(seed), "edit")
    assert all(call.keyframes is None for call in spy.calls)


def test_the_keyframes_velocity_is_part_of_the_loss(monkeypatch):
    """The same draws with other clean keyframes change the loss by exactly the keyframes' term
    (the model here predicts zero velocity): without it the keyframes would learn nothing."""
    monkeypatch.setattr(training, "KEYFRAME_SHARE", 1.0)
    codec, batch = _batch(keyframes=True)
    channels = batch.video_latents.shape[1]
    losses, spy = [], _Spy(channels)
    for high in (batch.keyframe_latents, torch.zeros_like(batch.keyframe_latents)):
        changed = Batch(batch.pixels, batch.video_latents, batch.audio_latents, batch.text, high)
        losses.append(
            training_loss(spy, codec, changed, torch.Generator().manual_seed(3), "t2av")[0]
        )
    call = spy.calls[1]
    noise = call.keyframes[:, :channels] / call.t.reshape(-1, 1, 1, 1, 1)  # clean keyframes 0
    x0 = batch.keyframe_latents[:, :, call.keyframe_indices]
    expected = (noise - x0).pow(2).mean() - noise.pow(2).mean()
    assert torch.allclose(losses[0] - losses[1], expected, atol=1e-5)


def _train(model, optimiser, codec, batch, generator, steps):
    for _ in range(steps):
        loss, _ = training_loss(model, codec, batch, generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def test_a_resumed_run_continues_bit_identically(tmp_path):
    """Model, optimiser and the batch generator resume, so 2 + 2 steps equal 4 unbroken ones."""
    codec, batch = _batch()
    model = tiny_model().train()
    optimiser = adamw(model.parameters(), lr=1e-3, weight_decay=0.01)
    generator = torch.Generator().manual_seed(2)
    _train(model, optimiser, codec, batch, generator, 2)
    save_checkpoint(tmp_path / "ckpt.safetensors", model, optimiser, 2, generator)
    _train(model, optimiser, codec, batch, generator, 2)

    fresh = tiny_model(seed=9).train()
    fresh_optimiser = adamw(fresh.parameters(), lr=1e-3, weight_decay=0.01)
    fresh_generator = torch.Generator().manual_seed(123)
    step = load_checkpoint(tmp_path / "ckpt.safetensors", fresh, fresh_optimiser, fresh_generator)
    assert step == 2
    # The restored state is the optimiser's own, not the mapped file's: the file overwritten in
    # place changes nothing (on Windows the mapping also kept every later checkpoint unwritable).
    held = copy.deepcopy(fresh_optimiser.state_dict()["state"])
    path = tmp_path / "ckpt.safetensors"
    size = path.stat().st_size
    with open(path, "r+b") as file:
        file.seek(size // 2)
        file.write(bytes(size - size // 2))
    restored = fresh_optimiser.state_dict()["state"]
    assert all(torch.equal(held[i]["exp_avg_sq"], restored[i]["exp_avg_sq"]) for i in held)
    _train(fresh, fresh_optimiser, codec, batch, fresh_generator, 2)
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key
    state, restored = optimiser.state_dict()["state"], fresh_optimiser.state_dict()["state"]
    assert all(torch.equal(state[i]["exp_avg"], restored[i]["exp_avg"]) for i in state)
    assert torch.equal(generator.get_state(), fresh_generator.get_state())


def test_conditions_that_follow_from_the_clip_are_encoded_once_with_the_same_loss(monkeypatch):
    """A world's batches keep the conditions of image-to-video, interpolation and extension (by
    how many frames it keeps) by clip, so those steps skip the codec after a clip's first; every
    loss is the uncached one, bit for bit, and the tasks with drawn masks (edits, keyframes) are
    encoded every time."""
    codec, batch = _batch(frames=17)  # 5 latent frames: an extension keeps 1 or 2
    cached = dataclasses.replace(batch, clips=torch.tensor([5, 7]), encoded_conditions={})
    calls = []
    encode = codec.encode
    monkeypatch.setattr(codec, "encode", lambda frames: calls.append(1) or encode(frames))
    model = tiny_model().train()
    for task in ("i2av", "interpolate", "extend", "edit", "keyframes"):
        losses, encodes = {}, {}
        for name, each in (("uncached", batch), ("cached", cached)):
            calls.clear()
            losses[name] = [
                training_loss(model, codec, each, torch.Generator().manual_seed(seed), task)[0]
                for seed in range(12)
            ]
            encodes[name] = len(calls)
        assert all(map(torch.equal, losses["cached"], losses["uncached"])), task
        assert encodes["uncached"] == 24
        assert encodes["cached"] == {"i2av": 2, "interpolate": 2, "extend": 4}.get(task, 24), task
    assert {key[:2] for key in cached.encoded_conditions} == {
        (clip, task) for clip in (5, 7) for task in ("i2av", "interpolate", "extend")
    }


def test_a_checkpoint_of_another_model_or_no_checkpoint_is_one_line(tmp_path):
    """A leftover checkpoint in --out (another preset's, or not a checkpoint at all) crashed the
    resume with a bare RuntimeError or KeyError."""
    from safetensors.torch import save_file

    from skyreels_core.errors import InputError

    model = tiny_model()
    path = tmp_path / "model_training.safetensors"
    save_checkpoint(path, model, adamw(model.parameters(), lr=1e-3, weight_decay=0.0), 3)
    other = tiny_model(num_dual_blocks=model.config.num_dual_blocks + 1).train()
    fix = "Fix: delete it to start afresh, or use another --out"
    with pytest.raises(InputError) as error:
        load_checkpoint(path, other, adamw(other.parameters(), lr=1e-3, weight_decay=0.0))
    assert str(error.value) == (
        f"--out: {path} is a checkpoint of another model configuration. {fix}"
    )
    save_file({"x": torch.zeros(1)}, str(path))  # no step: not a training checkpoint
    with pytest.raises(InputError) as error:
        load_checkpoint(path, model, adamw(model.parameters(), lr=1e-3, weight_decay=0.0))
    assert str(error.value) == f"--out: {path} is not a training checkpoint. {fix}"


class _Spy:
    """A stand-in model that records what training feeds it and predicts zeros."""

    def __init__(self, channels: int, audio_time_share: float = 0.0):
        self.channels = channels
        self.config = SimpleNamespace(audio_time_share=audio_time_share)
        self.calls = []

    def __call__(
        self,
        video,
        t,
        text,
        audio=None,
        references=None,
        keyframes=None,
        keyframe_indices=None,
        audio_timestep=None,
    ):
        self.calls.append(SimpleNamespace(video=video, t=t, text=text, audio=audio,
                                          keyframes=keyframes, keyframe_indices=keyframe_indices,
                                          audio_timestep=audio_timestep))  # fmt: skip
        return SimpleNamespace(
            video=torch.zeros_like(video[:, : self.channels]),
            audio=audio * 0,
            keyframes=None
            if keyframes is None
            else torch.zeros_like(keyframes[:, : self.channels]),
        )


def test_the_model_reads_the_condition_and_known_mask_as_the_sampler_feeds_them():
    """Training and sampling must give the model the same inputs: the condition latents, then the
    known mask (1 = given), and known cells on the path of the condition latents. Were the mask
    inverted or the clean latents noised at known cells, a trained model would read every
    condition wrongly at inference."""
    from skyreels_core.masks import condition_from_pixels
    from skyreels_core.tasks import conditioning_pixels

    codec, batch = _batch()
    channels = batch.video_latents.shape[1]
    conditions = [  # interpolate uses no random draws; its last latent group holds one frame
        condition_from_pixels(codec, *conditioning_pixels("interpolate", clip, torch.Generator()))
        for clip in batch.pixels
    ]
    known = torch.cat([c.known_mask for c in conditions])
    condition_latents = torch.cat([c.latents for c in conditions])
    assert 0 < known.mean() < 1
    spy = _Spy(channels)
    training_loss(spy, codec, batch, torch.Generator().manual_seed(1), "interpolate")
    video_in = spy.calls[0].video
    assert video_in.shape[1] == 2 * channels + 1
    assert torch.equal(video_in[:, -1:], known)
    assert torch.equal(video_in[:, channels:-1], condition_latents)

    # The clean latents at known cells must not reach the model: changing them changes nothing
    # there, while the same change at unknown cells does.
    changed = Batch(batch.pixels, batch.video_latents + 5.0, batch.audio_latents, batch.text)
    training_loss(spy, codec, changed, torch.Generator().manual_seed(1), "interpolate")
    first, second = spy.calls[0].video[:, :channels], spy.calls[1].video[:, :channels]
    given = known.bool().expand_as(first)
    assert torch.equal(first[given], second[given])
    t = spy.calls[0].t.reshape(-1, 1, 1, 1, 1).expand_as(first)
    assert torch.allclose((second - first)[~given], 5.0 * (1 - t[~given]), atol=1e-5)


def test_about_one_prompt_in_ten_is_dropped_to_the_null_text():
    """Guidance samples against the null text, which the model learns only from the 10 % of
    prompts training drops; dropping 90 % instead would train an almost unconditional model."""
    generator = torch.Generator().manual_seed(0)
    clips = 1000
    pixels = torch.rand(clips, 1, 16, 16, 3, generator=generator)
    codec = PoolingCodec()
    text = TextEncoding(
        torch.randn(clips, 3, 16, generator=generator) + 1, torch.ones(clips, 3, dtype=torch.bool)
    )
    batch = Batch(pixels, codec.encode(pixels), torch.randn(clips, 4, 3), text)
    spy = _Spy(4)
    training_loss(spy, codec, batch, torch.Generator().manual_seed(1), "t2av")
    fed = spy.calls[0].text
    dropped = (fed.features == 0).flatten(1).all(dim=1)
    kept = torch.equal(fed.features[~dropped], text.features[~dropped])
    assert kept and torch.equal(fed.mask, text.mask)
    assert 0.07 < dropped.float().mean().item() < 0.13


def test_training_times_follow_the_shift_3_distribution():
    """Times are uniform draws pushed towards noise by the shift 3, t = 3u / (1 + 2u), so training
    spends its steps where the sampler's shifted schedule does."""
    from skyreels_core.training import sample_times

    t = sample_times(10_000, torch.Generator().manual_seed(4))
    u = torch.rand(10_000, generator=torch.Generator().manual_seed(4))
    assert torch.allclose(t, 3 * u / (1 + 2 * u), atol=1e-6)
    assert abs(t.median().item() - 0.75) < 0.01


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_a_share_of_the_clips_noises_the_sound_at_a_time_of_its_own(share):
    """With ``audio_time_share`` the sound of about that share of clips is noised at a time drawn
    apart from the picture's, and the model is told it; at 0 both streams share every time and
    the batches drawn are those of a model without it (no extra draw)."""
    generator = torch.Generator().manual_seed(0)
    clips = 1000
    pixels = torch.rand(clips, 1, 16, 16, 3, generator=generator)
    codec = PoolingCodec()
    text = TextEncoding(torch.randn(clips, 3, 16), torch.ones(clips, 3, dtype=torch.bool))
    silent = Batch(pixels, codec.encode(pixels), torch.zeros(clips, 4, 3), text)
    loud = Batch(pixels, silent.video_latents, torch.ones(clips, 4, 3), text)
    spy = _Spy(4, audio_time_share=share)
    for batch in (silent, loud):
        training_loss(spy, codec, batch, torch.Generator().manual_seed(1), "t2av")
    quiet, heard = spy.calls
    own = quiet.audio_timestep != quiet.t
    assert abs(own.float().mean().item() - share) < 0.05
    assert torch.equal(quiet.audio_timestep, heard.audio_timestep)
    # x_t = (1 - t) x0 + t eps: the sound's x0 went from 0 to 1, so its input moved by 1 - t_audio.
    moved = (heard.audio - quiet.audio).mean(dim=(1, 2))
    torch.testing.assert_close(moved, 1 - quiet.audio_timestep, atol=1e-5, rtol=0)
    draws = torch.Generator().manual_seed(2)
    before = draws.get_state()
    training._audio_times(share, quiet.t, draws)
    assert torch.equal(draws.get_state(), before) == (not share)  # one time: the old batches
