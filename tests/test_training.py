"""Multi-task training: every task trains through the inference builders; checkpoints resume."""

from __future__ import annotations

import torch
from codec_helpers import PoolingCodec
from model_helpers import tiny_model

from skyreels_core.tasks import TASK_WEIGHTS
from skyreels_core.training import Batch, adamw, load_checkpoint, save_checkpoint, training_loss
from skyreels_core.types import TextEncoding


def _batch():
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 9, 32, 32, 3, generator=generator)
    codec = PoolingCodec()
    text = TextEncoding(
        torch.randn(2, 5, 16, generator=generator), torch.ones(2, 5, dtype=torch.bool)
    )
    return codec, Batch(
        pixels, codec.encode(pixels), torch.randn(2, 4, 12, generator=generator), text
    )


def test_every_task_gives_a_finite_loss_with_gradients():
    model = tiny_model().train()
    codec, batch = _batch()
    for task in TASK_WEIGHTS:
        model.zero_grad()
        loss, used = training_loss(model, codec, batch, torch.Generator().manual_seed(1), task)
        loss.backward()
        assert used == task and torch.isfinite(loss) and loss.item() > 0
        assert model.patch_embedding.weight.grad.abs().sum() > 0


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
    _train(fresh, fresh_optimiser, codec, batch, fresh_generator, 2)
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key
    state, restored = optimiser.state_dict()["state"], fresh_optimiser.state_dict()["state"]
    assert all(torch.equal(state[i]["exp_avg"], restored[i]["exp_avg"]) for i in state)
    assert torch.equal(generator.get_state(), fresh_generator.get_state())


def test_a_checkpoint_of_another_model_or_no_checkpoint_is_one_line(tmp_path):
    """A leftover checkpoint in --out (another preset's, or not a checkpoint at all) crashed the
    resume with a bare RuntimeError or KeyError."""
    import pytest
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
