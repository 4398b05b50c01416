"""Multi-task training: every task trains through the inference builders; checkpoints resume."""

from __future__ import annotations

import torch
from codec_helpers import PoolingCodec
from model_helpers import tiny_model

from skyreels_core.tasks import TASK_WEIGHTS
from skyreels_core.training import Batch, load_checkpoint, save_checkpoint, training_loss
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


def test_checkpoints_resume_model_and_optimiser(tmp_path):
    model = tiny_model().train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    codec, batch = _batch()
    for _ in range(2):
        loss, _ = training_loss(model, codec, batch, torch.Generator().manual_seed(2), "t2av")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    save_checkpoint(tmp_path / "ckpt.safetensors", model, optimiser, 2)
    fresh = tiny_model(seed=9).train()
    fresh_optimiser = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    assert load_checkpoint(tmp_path / "ckpt.safetensors", fresh, fresh_optimiser) == 2
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key])
    state, restored = optimiser.state_dict()["state"], fresh_optimiser.state_dict()["state"]
    assert all(torch.equal(state[i]["exp_avg"], restored[i]["exp_avg"]) for i in state)
