"""Test support: check UI-format workflows against node definitions, convert them to the API
format the way the frontend does, and run them headlessly through the node classes.

The host's core loader nodes are replaced by small shims that read workflows/assets/ exactly as
ComfyUI's own nodes read its input folder (IMAGE [1, H, W, 3], MASK [1, H, W], AUDIO dicts).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def _builder():
    spec = importlib.util.spec_from_file_location(
        "build_workflows", ROOT / "workflows" / "build_workflows.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_workflows"] = module
    spec.loader.exec_module(module)
    return module


BUILDER = _builder()


def definitions(mappings: dict) -> dict[str, dict]:
    """Per node type: ordered inputs (name, type, options) and output types, ours and the host's."""
    result = {}
    for name, spec in BUILDER.HOST_NODES.items():
        result[name] = {
            "inputs": [(n, [] if k == "COMBO" else k, {}) for n, k in spec["inputs"]],
            "outputs": [kind for _, kind in spec["outputs"]],
        }
    for name, cls in mappings.items():
        types = cls.INPUT_TYPES()
        inputs = [
            (n, s[0], s[1] if len(s) > 1 else {})
            for part in ("required", "optional")
            for n, s in types.get(part, {}).items()
        ]
        result[name] = {"inputs": inputs, "outputs": list(cls.RETURN_TYPES)}
    return result


def is_widget(kind) -> bool:
    return isinstance(kind, list) or kind in WIDGETS


def _widget_values(node: dict, inputs: list) -> dict:
    values, position = {}, 0
    for name, kind, options in inputs:
        if not is_widget(kind):
            continue
        values[name] = node["widgets_values"][position]
        position += 1
        if name in BUILDER.SEED_NAMES or options.get("control_after_generate"):
            position += 1  # the frontend's control_after_generate value
    return values


def validate(workflow: dict, defs: dict) -> list[str]:
    errors = []
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for node in workflow["nodes"]:
        if node["type"] not in defs:
            errors.append(f"node {node['id']}: unknown type {node['type']}")
            continue
        for name, value in _widget_values(node, defs[node["type"]]["inputs"]).items():
            kind, options = next((k, o) for n, k, o in defs[node["type"]]["inputs"] if n == name)
            expected = {"INT": int, "FLOAT": (int, float), "STRING": str, "BOOLEAN": bool}.get(
                kind if isinstance(kind, str) else ""
            )
            if expected and (
                not isinstance(value, expected) or (kind != "BOOLEAN" and isinstance(value, bool))
            ):
                errors.append(f"node {node['id']}: {name}={value!r} is not a {kind}")
            elif isinstance(kind, list) and kind and value not in kind:
                errors.append(f"node {node['id']}: {name}={value!r} is not one of its choices")
            elif kind in ("INT", "FLOAT") and not options.get(
                "min", -np.inf
            ) <= value <= options.get("max", np.inf):
                errors.append(f"node {node['id']}: {name}={value} is outside its range")
    for link_id, source, slot, target, target_slot, kind in workflow["links"]:
        produced = defs[nodes[source]["type"]]["outputs"][slot]
        wanted = nodes[target]["inputs"][target_slot]
        accepted = str(
            next(k for n, k, _ in defs[nodes[target]["type"]]["inputs"] if n == wanted["name"])
        ).split(",")
        if produced != kind or (
            produced not in accepted and not (accepted == ["[]"] or is_widget(accepted[0]))
        ):
            errors.append(
                f"link {link_id}: {produced} into {nodes[target]['type']}.{wanted['name']} ({accepted})"
            )
    return errors


def ui_to_api(workflow: dict, defs: dict) -> dict:
    """{id: {"class_type", "inputs"}} with links as [source_id, slot], like graphToPrompt."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        inputs = _widget_values(node, defs[node["type"]]["inputs"])
        for socket in node["inputs"]:
            if socket.get("link") is not None:
                _, source, slot, *_ = links[socket["link"]]
                inputs[socket["name"]] = [str(source), slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def _image(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).float()[None] / 255


def host_shims(input_dir: Path) -> dict:
    """Stand-ins for the host's core nodes, reading from ``input_dir`` as ComfyUI does."""
    from skyreels_core.av_io import read_audio, read_video

    def load_video(file):
        return (input_dir / file,)

    def components(video):
        frames, fps, audio = read_video(video)
        return frames, audio, fps

    def image_mask(image, channel):
        with Image.open(input_dir / image) as picture:
            band = np.asarray(picture.convert("RGBA"))[..., "rgba".index(channel[0])]
        mask = torch.from_numpy(band.astype(np.float32) / 255)[None]
        return (1 - mask if channel == "alpha" else mask,)

    return {
        "LoadImage": lambda image: (_image(input_dir / image), torch.zeros(1, 64, 64)),
        "LoadImageMask": image_mask,
        "LoadAudio": lambda audio: (read_audio(input_dir / audio),),
        "LoadVideo": load_video,
        "GetVideoComponents": components,
    }


def run(prompt: dict, mappings: dict, shims: dict, extra_pnginfo: dict | None = None) -> dict:
    """Execute an API prompt in dependency order; returns each node's outputs (and ui)."""
    outputs: dict[str, tuple] = {}
    uis: dict[str, dict] = {}

    def evaluate(node_id: str):
        if node_id in outputs:
            return outputs[node_id]
        spec = prompt[node_id]
        kwargs = {
            name: evaluate(value[0])[value[1]] if isinstance(value, list) else value
            for name, value in spec["inputs"].items()
        }
        kind = spec["class_type"]
        if kind in shims:
            result = shims[kind](**kwargs)
        else:
            cls = mappings[kind]
            hidden = cls.INPUT_TYPES().get("hidden", {})
            extras = {"prompt": prompt, "extra_pnginfo": extra_pnginfo, "unique_id": node_id}
            kwargs.update({name: extras[name] for name in hidden if name in extras})
            if hasattr(cls, "VALIDATE_INPUTS"):
                assert (
                    cls.VALIDATE_INPUTS(
                        **{k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor)}
                    )
                    is True
                )
            result = getattr(cls(), cls.FUNCTION)(**kwargs)
        if isinstance(result, dict):
            uis[node_id] = result.get("ui", {})
            result = result.get("result", ())
        outputs[node_id] = result
        return result

    for node_id in prompt:
        evaluate(node_id)
    return {"outputs": outputs, "ui": uis}
