"""The training commands' flags and --out folders: a count that cannot train is one line before
any work, a LoRA fits the model of the folder it is written into, a run reproduces itself."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from skyreels_core.__main__ import main
from skyreels_core.demo import bundle

TINY_BUNDLE = ["--no-compile", "--scenes", "2", "--codec-scenes", "2", "--video-codec-steps", "1",
               "--audio-codec-steps", "1", "--video-decoder-steps", "1", "--batch", "1",
               "--steps", "1", "--max-minutes", "0"]  # fmt: skip
"""train-demo stopped before its first model step: the bundle of a freshly initialised model."""


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    assert main(["train-demo", "--out", str(out), *TINY_BUNDLE]) == 0
    return out


@pytest.fixture
def no_work(monkeypatch):
    """Neither the world nor a model is made: what a test refuses is refused before any work."""
    from skyreels_core.demo import train, train_lora, train_refiner

    def never(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    for module, name in ((train, "render_world"), (train_lora, "render_world"),
                         (train_lora, "read_clips"), (train_refiner, "encode_world")):  # fmt: skip
        monkeypatch.setattr(module, name, never)


@pytest.mark.parametrize(
    "command, flags, line",
    [("train-demo", ["--checkpoint-every", "0"], "--checkpoint-every: 0. Fix: give 1 or more"),
     ("train-demo", ["--batch", "0"], "--batch: 0. Fix: give 1 or more"),
     ("train-demo", ["--steps", "-3"], "--steps: -3. Fix: give 1 or more"),
     ("train-demo", ["--keyframe-steps", "-1"], "--keyframe-steps: -1. Fix: give 0 or more"),
     ("train-demo", ["--codec-scenes", "0"], "--codec-scenes: 0. Fix: give 1 or more"),
     ("train-demo", ["--seed", "10"], "--seed: 10 would draw scenes from 1000000"),
     ("train-demo-lora", ["--batch", "-2"], "--batch: -2. Fix: give 1 or more"),
     ("train-demo-lora", ["--rank", "0"], "--rank: 0. Fix: give 1 or more"),
     ("train-demo-lora", ["--rank", "-1"], "--rank: -1. Fix: give 1 or more"),
     ("train-demo-lora", ["--steps", "-3"], "--steps: -3. Fix: give 1 or more"),
     ("train-demo-lora", ["--lr", "0"], "--lr: 0. Fix: give a positive learning rate"),
     ("train-demo-lora", ["--scenes", "0"], "--scenes: 0. Fix: use 1 to 100000"),
     ("train-demo-refiner", ["--checkpoint-every", "0"],
      "--checkpoint-every: 0. Fix: give 1 or more"),
     ("train-demo-refiner", ["--batch", "0"], "--batch: 0. Fix: give 1 or more")],
)  # fmt: skip
def test_a_count_that_cannot_train_is_one_line_before_any_work(
    tmp_path, capsys, no_work, command, flags, line
):
    """--checkpoint-every 0 divided by zero after the codecs' minutes, --batch 0 crashed in torch,
    --rank 0 and --steps -3 wrote a LoRA that changes nothing; and no --out folder is left."""
    out = tmp_path / "new"
    assert main([command, *flags, "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {line}")
    assert not out.exists()


@pytest.mark.parametrize("clips", [True, False])
def test_a_lora_out_naming_a_file_is_refused(tmp_path, capsys, no_work, clips):
    """--out loras/style.safetensors made a folder of that name with the LoRA inside."""
    out = tmp_path / "loras" / "style.safetensors"
    args = ["--clips", str(tmp_path / "my_style")] if clips else []
    name = "my_style.safetensors" if clips else bundle.LORA_FILE
    assert main(["train-demo-lora", *args, "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: --out: {out} names a file. Fix: name a folder (the LoRA is written there as "
        f"{name})\n"
    )
    assert not (tmp_path / "loras").exists()


def test_scenes_with_clips_is_refused(tmp_path, capsys, no_work):
    """--scenes sets the palette-shifted world's size; with --clips it was silently ignored."""
    args = ["--clips", str(tmp_path / "my_style"), "--scenes", "8", "--out", str(tmp_path / "l")]
    assert main(["train-demo-lora", *args]) == 2
    assert capsys.readouterr().err == (
        "error: --scenes: given with --clips, which trains on the clips instead of the world. "
        "Fix: drop one\n"
    )


def _lora_base(path) -> str:
    with safe_open(str(path), "pt") as handle:
        return handle.metadata()["base_model_sha256"]


def test_a_lora_written_into_a_train_demo_folder_fits_that_folders_model(
    tmp_path, tiny_bundle, monkeypatch
):
    """train-demo --out X then train-demo-lora --out X trained on the bundled model and wrote its
    sha into X's manifest as if it were X's; it now trains on X's model, codecs and encoder."""
    from skyreels_core import loading

    out = shutil.copytree(tiny_bundle, tmp_path / "mine")
    loaded = []
    original = loading.load_model
    monkeypatch.setattr(loading, "load_model", lambda path, **kw: loaded.append(path) or original(path, **kw))  # fmt: skip
    lora_flags = ["--scenes", "2", "--steps", "1", "--batch", "1", "--rank", "1"]
    assert main(["train-demo-lora", "--out", str(out), *lora_flags]) == 0
    assert loaded == [out / "model.safetensors"]
    ours = bundle.file_digest(out / "model.safetensors")
    assert ours != bundle.file_digest(bundle.model_path())
    assert _lora_base(out / bundle.LORA_FILE) == ours
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sha256"]["model.safetensors"] == ours
    assert manifest["sha256"][bundle.LORA_FILE] == bundle.file_digest(out / bundle.LORA_FILE)

    elsewhere = tmp_path / "elsewhere"  # a folder without a model: the bundled one
    assert main(["train-demo-lora", "--out", str(elsewhere), *lora_flags]) == 0
    assert _lora_base(elsewhere / bundle.LORA_FILE) == bundle.file_digest(bundle.model_path())


def test_a_lora_out_with_an_unfinished_bundle_is_one_line(tmp_path, tiny_bundle, capsys, no_work):
    out = shutil.copytree(tiny_bundle, tmp_path / "mine")
    shutil.rmtree(out / "text_encoder")
    assert main(["train-demo-lora", "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: --out: {out} holds a model.safetensors without its text_encoder. Fix: finish "
        "its train-demo run (the same command resumes it), or use another --out\n"
    )


def test_the_model_starts_the_same_whether_the_encoder_was_made_or_reused(
    tmp_path, tiny_bundle, capsys
):
    """A run interrupted after the text encoder was made, run again, initialised its model from
    another random state than the unbroken run: making the encoder drew from torch's generator.
    The kept parts are said and listed in the manifest: the default --out, the bundled folder,
    kept its codecs under any codec flags while the manifest's command claimed them; and the
    bundled LoRA left beside the new model no longer fits it."""
    assert "reused" not in json.loads((tiny_bundle / "manifest.json").read_text())
    reused = tmp_path / "reused"
    reused.mkdir()
    for name in ("video_codec.safetensors", "audio_codec.safetensors"):
        shutil.copy(tiny_bundle / name, reused / name)
    shutil.copytree(tiny_bundle / "text_encoder", reused / "text_encoder")
    shutil.copy(bundle.lora_path(), reused / bundle.LORA_FILE)
    capsys.readouterr()
    assert main(["train-demo", "--out", str(reused), *TINY_BUNDLE]) == 0
    fresh = load_file(tiny_bundle / "model.safetensors")
    again = load_file(reused / "model.safetensors")
    assert fresh.keys() == again.keys()
    assert all(torch.equal(fresh[key], again[key]) for key in fresh)
    parts = ["video_codec.safetensors", "audio_codec.safetensors", "text_encoder"]
    assert json.loads((reused / "manifest.json").read_text())["reused"] == parts
    printed = capsys.readouterr().out
    assert (
        f"train-demo: keeping {', '.join(parts)} from an earlier run in {reused}; delete them, or "
        "use a new --out, to make them afresh (the codec flags apply only to new codecs)\n"
    ) in printed
    assert (
        f"{reused / bundle.LORA_FILE} was trained on another model: run `python -m skyreels_core "
        f"train-demo-lora --out {reused}` to fit it to this one\n"
    ) in printed


def test_the_keyframe_stage_depends_on_the_model_stages_weights_alone(tmp_path):
    """The keyframe stage starts its own optimiser and batch generator, so the bundle's model is
    the model stage's weights fine-tuned the same way whatever optimiser state and generator the
    model stage ended with; a later run with more model steps trains the stage afresh on them."""
    from skyreels_core.loading import load_model
    from skyreels_core.training import adamw, load_checkpoint, save_checkpoint

    flags = [*TINY_BUNDLE[:-4], "--steps", "2", "--keyframe-steps", "2", "--checkpoint-every", "1"]
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["train-demo", "--out", str(first), *flags]) == 0
    second.mkdir()
    for name in ("video_codec.safetensors", "audio_codec.safetensors"):
        shutil.copy(first / name, second / name)
    shutil.copytree(first / "text_encoder", second / "text_encoder")
    model = load_model(first / "model.safetensors").train()  # any weights of the demo preset
    optimiser = adamw(model.parameters(), lr=1e-3, weight_decay=0.01)
    load_checkpoint(first / "model_training.safetensors", model, optimiser)
    fresh = adamw(model.parameters(), lr=1e-3, weight_decay=0.01)  # no state, another generator
    save_checkpoint(second / "model_training.safetensors", model, fresh, 2, torch.Generator())
    assert main(["train-demo", "--out", str(second), *flags]) == 0
    ours, theirs = (load_file(folder / "model.safetensors") for folder in (first, second))
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)
    stage = load_file(first / "model_training.safetensors")
    assert not torch.equal(stage["model.head.head.weight"], ours["head.head.weight"])
    with safe_open(first / "model.safetensors", "pt") as handle:
        assert handle.metadata()["keyframe_steps"] == "2"
    flags[flags.index("--steps") + 1] = "3"
    assert main(["train-demo", "--out", str(second), *flags]) == 0
    longer = load_file(second / "keyframes_training.safetensors")
    resumed = load_file(second / "model_training.safetensors")
    assert not torch.equal(longer["model.head.head.weight"], ours["head.head.weight"])
    assert not torch.equal(resumed["model.head.head.weight"], stage["model.head.head.weight"])


def test_a_leftover_checkpoint_of_another_model_is_one_line(tmp_path, capsys):
    """The refiner's --out holding another model's checkpoint crashed in load_state_dict."""
    from model_helpers import tiny_model

    from skyreels_core.training import adamw, save_checkpoint

    model = tiny_model()
    stale = tmp_path / "refiner_training.safetensors"
    save_checkpoint(stale, model, adamw(model.parameters(), lr=1e-3, weight_decay=0.0), 5)
    args = ["--scenes", "1", "--steps", "1", "--batch", "1", "--out", str(tmp_path)]
    assert main(["train-demo-refiner", *args]) == 2
    assert capsys.readouterr().err == (
        f"error: --out: {stale} is a checkpoint of another model configuration. Fix: delete it "
        "to start afresh, or use another --out\n"
    )


def test_compiled_training_steps_agree_with_eager_ones(monkeypatch):
    """train-demo's default: the blocks through inductor's C++ kernels (every compiled step is
    called), the same losses and weights as eager steps from the same start, to rounding."""
    import copy

    from skyreels_core.config import get_preset
    from skyreels_core.demo.codecs import DemoAudioCodec, DemoVideoCodec
    from skyreels_core.demo.dataset import render_world
    from skyreels_core.demo.train import MODEL_STEPS, compiled_blocks, encode_world, model_step
    from skyreels_core.encoder import MLLMEncoder
    from skyreels_core.mmdit import DualStreamMMDiT
    from skyreels_core.runtime import installed
    from skyreels_core.training import adamw

    video_codec = DemoVideoCodec.load(bundle.WEIGHTS_DIR / "video_codec.safetensors")
    audio_codec = DemoAudioCodec.load(bundle.WEIGHTS_DIR / "audio_codec.safetensors")
    encoder = MLLMEncoder.from_folder(bundle.WEIGHTS_DIR / "text_encoder", dtype=torch.float32)
    world = encode_world(render_world(2, seed=0), video_codec, audio_codec, encoder)
    calls = {"eager": [], "compiled": []}  # per compiled step, its calls
    compile_for_real = torch.compile

    def counted(name, compile_step):
        def compile_counted(step):
            compiled = compile_step(step)
            count = calls[name]
            count.append(0)
            index = len(count) - 1

            def call(*args, **kwargs):
                count[index] += 1
                return compiled(*args, **kwargs)

            return call

        return compile_counted

    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = DualStreamMMDiT(get_preset("demo")).train()
    compiled = copy.deepcopy(eager)
    losses = {}
    for name, model, compile_step in (("eager", eager, lambda step: step),
                                      ("compiled", compiled, compile_for_real)):  # fmt: skip
        monkeypatch.setattr(torch, "compile", counted(name, compile_step))
        optimiser = adamw(model.parameters(), lr=1e-3, weight_decay=0.01)
        generator = torch.Generator().manual_seed(0)
        with installed(compiled_blocks(model, True)):
            losses[name] = [
                model_step(model, optimiser, video_codec, world, step, MODEL_STEPS, 2, generator)
                for step in range(3)
            ]
    # Every step the forward runs (an audio block has no text cross-attention) ran compiled.
    assert calls["compiled"] == calls["eager"] and set(calls["eager"]) == {0, 3}
    assert [task for _, task in losses["eager"]] == [task for _, task in losses["compiled"]]
    torch.testing.assert_close(
        [loss for loss, _ in losses["compiled"]], [loss for loss, _ in losses["eager"]],
        rtol=1e-4, atol=0,
    )  # fmt: skip
    for ours, theirs in zip(compiled.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert "attend" not in vars(compiled.blocks[0])  # eager again after training


def test_train_demo_without_a_compiler_is_refused_naming_the_flag_before_any_work(
    tmp_path, capsys, no_work
):
    """A host without a C++ compiler: one line naming --compile and the fix, before --out is
    made and the codecs' minutes (the blocks' own steps would raise the same at the first model
    step, as a node's do)."""
    import torch._inductor.config

    out = tmp_path / "bundle"
    torch._dynamo.reset()  # graphs compiled by earlier tests would not meet the toolchain
    with torch._inductor.config.patch({"cpp.cxx": ("/nonexistent/g++",)}):
        assert main(["train-demo", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(
        "error: --compile: torch.compile has no working toolchain here (InvalidCxxCompiler: "
    )
    assert error.endswith(
        "Fix: pass --no-compile, or install a C++ compiler (CPU) / Triton (GPU)\n"
    )
    assert not out.exists()


def test_the_manifest_records_a_run_without_compiled_steps(tiny_bundle):
    command = json.loads((tiny_bundle / "manifest.json").read_text())["command"]
    assert command.endswith("--batch 1 --no-compile --max-minutes 0")
