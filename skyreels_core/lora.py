"""LoRA files applied to a loaded model while it renders, never written into its weights.

Community LoRAs for Wan 2.1 reach the layers the video stream shares with Wan (Wan's names are
the video stream's names, DESIGN §3). They come in four spellings, all read here: Wan's own names
(ComfyUI, diffusion-pipe: ``diffusion_model.blocks.0.self_attn.q.lora_A.weight``), kohya / musubi
(``lora_unet_blocks_0_self_attn_q.lora_down.weight`` with ``.alpha``), diffusers / PEFT
(``transformer.blocks.0.attn1.to_q.lora_A.weight``), and this pack's own module names, which
also reach the audio stream, the joint-text weights and the single-stream blocks. Full-weight
differences (``.diff``, ``.diff_b``, as distillation LoRAs carry) are applied too, and the alphas
diffusers keeps in a file's metadata rather than in ``.alpha`` tensors.

Why not merge: the host caches the loaded model and shares it with every workflow that loads the
same file, so its weights must never change. A Linear layer's delta is added to its output by a
forward hook, ``y + up(down(x)) + x diffᵀ + diff_b``, with every LoRA on that layer folded into
one pair (their ranks stacked, strengths and alpha / rank folded into ``up``): about 2r/d more
work per layer, exact in every storage dtype (fp8 included), with block swap too, and gone when
the render ends. The few other parameters a file may change (norm scales, modulation tables) are
small: they are swapped for patched copies where they rest and swapped back afterwards.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from .errors import CheckpointError
from .loading import DIFFUSERS_ONLY_NAMES, read_header, wan_name_from_diffusers

log = logging.getLogger(__name__)

PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.")
KOHYA_PREFIX = "lora_unet_"
ADAPTER_METADATA_KEY = "lora_adapter_metadata"  # where diffusers writes the PEFT config
FIELDS = {  # key suffix -> what it holds
    ".lora_A.weight": "down",
    ".lora_down.weight": "down",
    ".lora.down.weight": "down",
    ".lora_B.weight": "up",
    ".lora_up.weight": "up",
    ".lora.up.weight": "up",
    ".lora_B.bias": "diff_b",  # diffusers' spelling of a bias difference
    ".alpha": "alpha",
    ".diff": "diff",
    ".diff_b": "diff_b",
    ".diff_m": "diff_m",  # a block's modulation table difference (LightX2V's distillation LoRAs)
}
UNSUPPORTED = {  # key fragment -> the adapter kind it belongs to
    "hada_": "LoHa (LyCORIS)",
    "lokr_": "LoKr (LyCORIS)",
    ".dora_scale": "DoRA",
    "lora_mid": "LoCon with a mid weight (LyCORIS)",
}


@dataclass
class LayerDelta:
    """What one file adds to one Linear layer: a low-rank pair (``up`` times ``scale`` when
    applied) and full weight / bias differences; any may be absent."""

    down: torch.Tensor | None = None  # [rank, in_features]
    up: torch.Tensor | None = None  # [out_features, rank]
    scale: float = 1.0  # alpha / rank
    weight: torch.Tensor | None = None  # [out_features, in_features]
    bias: torch.Tensor | None = None  # [out_features]


@dataclass
class Lora:
    """One LoRA file read against one model: deltas keyed by the model's own names."""

    name: str
    layers: dict[str, LayerDelta] = field(default_factory=dict)
    parameters: dict[str, torch.Tensor] = field(default_factory=dict)  # non-Linear differences
    skipped: list[str] = field(default_factory=list)  # layers the file names and the model lacks

    def numel(self) -> int:
        tensors = [t for d in self.layers.values() for t in (d.down, d.up, d.weight, d.bias)]
        return sum(t.numel() for t in tensors if t is not None)


def _split(key: str) -> tuple[str, str]:
    """(layer name without prefixes, field) of one key; field "" for a key of no LoRA field."""
    suffix = next((suffix for suffix in FIELDS if key.endswith(suffix)), None)
    if suffix is None:
        return key, ""
    layer = key.removesuffix(suffix)
    for prefix in PREFIXES:
        layer = layer.removeprefix(prefix)
    return layer, FIELDS[suffix]


class _Names:
    """Resolves a file's layer name to the model's: as is, from diffusers' names, or kohya's
    underscored spelling (``blocks_0_self_attn_q``). Whether a file names layers as diffusers
    does is read off the whole file: "blocks.0.norm2" is a layer in both namings (diffusers'
    is Wan's norm3), only names such as attn1 or to_q tell them apart."""

    def __init__(self, model: nn.Module, layers: Iterable[str]) -> None:
        self.modules = dict(model.named_modules())
        self.parameters = dict(model.named_parameters())
        self.underscored = {name.replace(".", "_"): name for name in self.modules}
        self.diffusers = any(
            mark in layer + "." for layer in layers for mark in DIFFUSERS_ONLY_NAMES
        )

    def resolve(self, layer: str) -> str | None:
        if layer.startswith(KOHYA_PREFIX):
            return self.underscored.get(layer.removeprefix(KOHYA_PREFIX))
        names = [layer]
        if self.diffusers:  # a module's name renamed with its dot, a parameter's whole
            # (diffusers' scale_shift_tables are Wan's modulation tables, of no module)
            names = [wan_name_from_diffusers(layer + ".").removesuffix(".")]
            names.append(wan_name_from_diffusers(layer))
        return next((n for n in names if n in self.modules or n in self.parameters), None)


def _refuse_unsupported(keys: Sequence[str], file: str) -> None:
    for fragment, kind in UNSUPPORTED.items():
        if any(fragment in key for key in keys):
            raise CheckpointError(
                "lora_name",
                f"{file} is a {kind} adapter; this loader applies plain LoRA pairs and weight "
                "differences",
                "use a plain LoRA (lora_A/lora_B or lora_down/lora_up) of the model",
            )


@dataclass(frozen=True)
class AdapterAlphas:
    """The alphas a diffusers / PEFT file keeps in its ``lora_adapter_metadata`` instead of
    ``.alpha`` tensors: a default, per-layer patterns, and rsLoRA's alpha / sqrt(rank). Read
    without it, such a file applies at rank / alpha times its strength."""

    default: float | None = None
    patterns: dict[str, float] = field(default_factory=dict)
    rslora: bool = False

    @classmethod
    def of(cls, metadata: dict[str, str], file: str) -> AdapterAlphas:
        raw = metadata.get(ADAPTER_METADATA_KEY)
        if raw is None:
            return cls()
        try:
            config = json.loads(raw)
        except ValueError:
            raise CheckpointError(
                "lora_name",
                f"{file}'s {ADAPTER_METADATA_KEY} is not JSON, so its alphas are unknown",
                "re-export the LoRA",
            ) from None
        config = {key.removeprefix("transformer."): value for key, value in config.items()}
        default = config.get("lora_alpha")
        return cls(
            None if default is None else float(default),
            {key: float(value) for key, value in (config.get("alpha_pattern") or {}).items()},
            bool(config.get("use_rslora")),
        )

    def scale(self, layer: str, alpha: torch.Tensor | None, rank: int) -> float:
        """alpha / rank (or / sqrt(rank)) of one layer: its own ``.alpha`` tensor first, then
        the first pattern naming it (PEFT's rule: the pattern ends the layer's dotted name),
        then the default; 1 without any."""
        if alpha is None:
            matched = (v for p, v in self.patterns.items() if re.match(rf"(.*\.)?({p})$", layer))
            value = next(matched, self.default)
        else:
            value = float(alpha)
        if value is None:
            return 1.0
        return value / (math.sqrt(rank) if self.rslora else rank)


def _grouped(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], AdapterAlphas]:
    """layer name -> field -> tensor, every key of the file accounted for, and the alphas its
    metadata gives. The header is checked first, as every loader does: an empty, truncated or
    foreign file names lora_name."""
    header, metadata = read_header(path, "lora_name")
    keys = list(header)
    _refuse_unsupported(keys, path.name)
    groups: dict[str, dict[str, torch.Tensor]] = {}
    first_keys: dict[tuple[str, str], str] = {}  # (layer, field) -> the key that gave it
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        for key in keys:
            layer, kind = _split(key)
            if not kind:
                raise CheckpointError(
                    "lora_name",
                    f"{path.name} holds {key!r}, which is not a LoRA weight",
                    "pick a LoRA file (its keys end in lora_A/lora_B, lora_down/lora_up, alpha, "
                    "diff or diff_b)",
                )
            # a copy of its own: safetensors' tensor reads the mapped file, which a LoRA replaced
            # in place (cp, wget -O) under the running host would change or crash (SIGBUS)
            fields, tensor = groups.setdefault(layer, {}), handle.get_tensor(key).clone()
            first = first_keys.setdefault((layer, kind), key)
            if kind in fields and not torch.equal(fields[kind], tensor):
                _refuse_two_spellings(path.name, f"{layer} ({kind})", first=first, second=key)
            fields[kind] = tensor
    return groups, AdapterAlphas.of(metadata, path.name)


def _same_fields(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(
        torch.equal(first[kind], second[kind]) for kind in first
    )


def _refuse_two_spellings(file: str, target: str, first: str, second: str) -> None:
    """One layer spelled twice with different tensors: applying either would be a guess (the
    other would be dropped silently), and a merged file of two LoRAs is the usual cause."""
    raise CheckpointError(
        "lora_name",
        f"{file} gives {target} twice with different weights, as {first!r} and {second!r}",
        "use a LoRA file that names each layer once (load two LoRAs as two Load LoRA nodes)",
    )


def _layer_delta(
    layer: str,
    fields: dict[str, torch.Tensor],
    module: nn.Linear,
    file: str,
    alphas: AdapterAlphas,
):
    down, up, alpha = fields.get("down"), fields.get("up"), fields.get("alpha")
    if (down is None) != (up is None):
        raise CheckpointError(
            "lora_name",
            f"{file} gives {layer} only half of a low-rank pair",
            "use a complete LoRA file (each down weight needs its up weight)",
        )
    if alpha is not None and alpha.numel() != 1:
        raise CheckpointError(
            "lora_name",
            f"{file} gives {layer} an alpha of {alpha.numel()} values",
            "use an intact LoRA file (alpha is one number per layer)",
        )
    delta = LayerDelta(weight=fields.get("diff"), bias=fields.get("diff_b"))
    if down is not None:
        delta.down, delta.up = (t.flatten(1) if t.dim() > 2 else t for t in (down, up))  # 1x1 convs
        rank = delta.down.shape[0] if delta.down.dim() and delta.down.shape[0] else 1
        delta.scale = alphas.scale(layer, alpha, rank)
    expected = {
        "down": (None, module.in_features),
        "up": (module.out_features, None),
        "weight": (module.out_features, module.in_features),
        "bias": (module.out_features,),
    }
    for name, shape in expected.items():
        tensor = getattr(delta, name)
        if tensor is None:
            continue
        if len(tensor.shape) != len(shape) or any(
            want is not None and have != want for have, want in zip(tensor.shape, shape)
        ):
            raise CheckpointError(
                "lora_name",
                f"{file} gives {layer} a {name} of shape {tuple(tensor.shape)}, and this model's "
                f"layer is {module.out_features} x {module.in_features}",
                "use a LoRA made for this model and size (a 14B LoRA does not fit a 1.3B model)",
            )
    if delta.down is not None and delta.down.shape[0] != delta.up.shape[1]:
        raise CheckpointError(
            "lora_name",
            f"{file} gives {layer} down and up weights of different ranks",
            "use an intact LoRA file",
        )
    return delta


def read_lora(path: str | Path, model: nn.Module) -> Lora:
    """The file's deltas, checked against ``model``'s layers and shapes.

    Layers the model lacks (an I2V LoRA's image attention on a T2V model) are listed in
    ``skipped``; a file of which no layer fits is refused.
    """
    path = Path(path)
    groups, alphas = _grouped(path)
    names, lora = _Names(model, groups), Lora(path.name)
    spelled: dict[str, str] = {}  # the model's layer -> the file's name for it
    for layer, fields in groups.items():
        target = names.resolve(layer)
        if target is None:
            lora.skipped.append(layer)
        elif target in spelled:
            if not _same_fields(groups[spelled[target]], fields):
                _refuse_two_spellings(path.name, target, first=spelled[target], second=layer)
        else:
            spelled[target] = layer
            if isinstance(names.modules.get(target), nn.Linear):
                module = names.modules[target]
                lora.layers[target] = _layer_delta(layer, fields, module, path.name, alphas)
            else:
                _add_parameter_diffs(lora, names, target, fields, path.name)
    if not lora.layers and not lora.parameters:
        shown = ", ".join(sorted(lora.skipped)[:3])
        raise CheckpointError(
            "lora_name",
            f"no layer {path.name} names is in this model (it names {shown} ...)",
            "use a LoRA for Wan 2.1 or SkyReels-V4 (its layers: blocks.N.self_attn.q, ...)",
        )
    if lora.skipped:
        log.warning(
            "%s: %d layers this model lacks were skipped (%s)",
            path.name,
            len(lora.skipped),
            ", ".join(sorted(lora.skipped)[:5]),
        )
    return lora


def _add_parameter_diffs(
    lora: Lora, names: _Names, target: str, fields: dict[str, torch.Tensor], file: str
) -> None:
    """A non-Linear target takes only differences: ``diff`` on its weight (or on the parameter
    itself, as for modulation tables), ``diff_b`` on its bias, ``diff_m`` on a block's
    modulation table."""
    for kind, tensor in fields.items():
        if kind not in ("diff", "diff_b", "diff_m"):
            raise CheckpointError(
                "lora_name",
                f"{file} gives {target} a low-rank pair, and that is not a Linear layer here",
                "use a LoRA made for this model",
            )
        suffix = {"diff": ".weight", "diff_b": ".bias", "diff_m": ".modulation"}[kind]
        name = target if target in names.parameters else target + suffix
        parameter = names.parameters.get(name)
        if parameter is None or parameter.shape != tensor.shape:
            raise CheckpointError(
                "lora_name",
                f"{file} changes {name} with shape {tuple(tensor.shape)}, and this model's is "
                f"{None if parameter is None else tuple(parameter.shape)}",
                "use a LoRA made for this model and size",
            )
        lora.parameters[name] = tensor


def _stack(
    pieces: list[tuple[LayerDelta, float]], device: torch.device, dtype: torch.dtype
) -> LayerDelta:
    """Every file's delta on one layer as one: ranks stacked, strengths folded into ``up``."""

    def scaled(tensor: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        return tensor.to(device, torch.float32) * strength

    pairs = [(d, s) for d, s in pieces if d.down is not None]
    stacked = LayerDelta()
    if pairs:
        stacked.down = torch.cat([scaled(d.down) for d, _ in pairs]).to(dtype)
        stacked.up = torch.cat([scaled(d.up, s * d.scale) for d, s in pairs], dim=1).to(dtype)
    for name in ("weight", "bias"):
        terms = [scaled(getattr(d, name), s) for d, s in pieces if getattr(d, name) is not None]
        if terms:
            setattr(stacked, name, torch.stack(terms).sum(0).to(dtype))
    return stacked


def _output_hook(delta: LayerDelta):
    def add_delta(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        if delta.down is not None:
            output = output + F.linear(F.linear(x, delta.down), delta.up)
        if delta.weight is not None:
            output = output + F.linear(x, delta.weight)
        if delta.bias is not None:
            output = output + delta.bias
        return output

    return add_delta


@contextmanager
def applied(
    model: nn.Module, loras: Sequence[tuple[Lora, float]], device: torch.device
) -> Iterator[None]:
    """``model`` computes with ``loras`` at their strengths inside the block, and exactly as
    loaded after it. Enter it before the model moves to ``device``: patched parameters are
    swapped where they rest, so a block swap and the move back carry the patched copies."""
    loras = [(lora, strength) for lora, strength in loras if strength != 0]
    if not loras:
        yield
        return
    modules, parameters = dict(model.named_modules()), dict(model.named_parameters())
    by_layer: dict[str, list[tuple[LayerDelta, float]]] = {}
    for lora, strength in loras:
        for layer, delta in lora.layers.items():
            by_layer.setdefault(layer, []).append((delta, strength))
    handles = []
    originals: dict[str, torch.Tensor] = {}
    try:
        for layer, pieces in by_layer.items():
            module = modules[layer]
            dtype = getattr(module, "compute_dtype", module.weight.dtype)
            hook = _output_hook(_stack(pieces, device, dtype))
            handles.append(module.register_forward_hook(hook))
        for lora, strength in loras:
            for name, diff in lora.parameters.items():
                parameter = parameters[name]
                originals.setdefault(name, parameter.data)
                patched = (
                    parameter.data.float() + diff.to(parameter.device, torch.float32) * strength
                )
                parameter.data = patched.to(parameter.dtype)
        yield
    finally:
        for handle in handles:
            handle.remove()
        for name, original in originals.items():
            parameters[name].data = original
