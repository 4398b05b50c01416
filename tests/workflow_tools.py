"""Test support built on ComfyUI's own /object_info structure, so the same code checks and runs
workflows whether the definitions come from the node classes (headless tests) or from a live
server (tests/test_comfyui_server.py). The UI -> API conversion itself is the pack's own
(``skyreels_core.workflow_format``, which the queue command uses).

Semantics follow ComfyUI 0.3.64: server.py node_info() for object_info, comfy_execution/
validation.py validate_node_input() for link types.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from skyreels_core import av_io
from skyreels_core.workflow_format import (
    VIRTUAL_NODES,
    node_inputs,
    plain_value,
    type_name,
    types_match,
    widget_values,
)

CONTROLLED_INPUTS = {  # every way a widget gets control_after_generate values, or does not
    "seed": ["INT", {"default": 1}],
    "noise_seed": ["INT", {"default": 1, "control_after_generate": False}],
    "count": ["INT", {"default": 1, "control_after_generate": True}],
    "choice": [["a", "b", "c"], {"control_after_generate": True}],
    "strength": ["FLOAT", {"default": 0.5, "control_after_generate": True}],
    "plain": ["FLOAT", {"default": 0.25}],
    "label": ["STRING", {"default": "x"}],
    "mode": [["x", "y"], {}],
}
CONTROLLED_VALUES = {"seed": 7, "noise_seed": 8, "count": 9, "choice": "c", "strength": 0.75}
CONTROLLED_VALUES |= {"plain": 0.5, "label": "y", "mode": "y"}
# The widgets_values each release of the host's frontend saved for a node with CONTROLLED_INPUTS
# set to CONTROLLED_VALUES (recorded by test_comfyui_server's control test): a COMBO's filter list
# follows its control; 1.27 gave the FLOAT no control.
CONTROLLED_SAVED = {
    "1.27": [7, "randomize", 8, 9, "randomize", "c", "randomize", "", 0.75, 0.5, "y", "y"],
    "1.58": [7, "randomize", 8, 9, "randomize", "c", "randomize", "", 0.75, "fixed", 0.5, "y", "y"],
}


def controlled_node_info() -> dict:
    """The node info /object_info gives a node declaring CONTROLLED_INPUTS."""
    order = {"required": list(CONTROLLED_INPUTS)}
    return {"input": {"required": CONTROLLED_INPUTS}, "input_order": order}


def _probe_node(inputs: dict, outputs: list[str]) -> dict:
    """/object_info's entry for a node that only passes links on (in tests: converted, or registered
    in the host's frontend page, never run)."""
    return {
        "input": {"required": {name: [kind, {}] for name, kind in inputs.items()}},
        "input_order": {"required": list(inputs)},
        "output": outputs,
        "output_is_list": [False] * len(outputs),
        "output_name": outputs,
        "output_node": False,
        "category": "testing",
        "description": "",
        "python_module": "custom_nodes.probe",
    }


PROBE_NODES = {  # several inputs and outputs of one type, comma unions, "*", widgets
    name: info | {"name": name, "display_name": name}
    for name, info in {
        "ProbeSource": _probe_node({}, ["IMAGE", "IMAGE", "MASK"]),
        "ProbeMix": _probe_node(
            {"a": "IMAGE", "b": "IMAGE", "m": "MASK"}, ["IMAGE", "IMAGE", "MASK"]
        ),
        "ProbeUnion": _probe_node({"u": "IMAGE,MASK", "v": "MASK"}, ["MASK", "IMAGE,MASK"]),
        "ProbeAny": _probe_node({"x": "*", "y": "IMAGE"}, ["IMAGE"]),
        "ProbeWide": _probe_node({"w": "*", "u": "IMAGE,MASK", "v": "MASK"}, ["IMAGE", "MASK"] * 2),
        "ProbeKnob": _probe_node({"i": "IMAGE", "seed": "INT", "label": "STRING"}, ["IMAGE"]),
    }.items()
}


def probe_workflow(
    nodes: dict[int, tuple[str, int]], links: list[tuple[int, int, int, int]]
) -> dict:
    """A UI workflow of PROBE_NODES: node id -> (type, mode), links (origin, slot, target, slot)."""
    saved = {
        node_id: {
            "id": node_id,
            "type": kind,
            "mode": mode,
            "inputs": [
                {"name": name, "type": spec[0], "link": None}
                for name, spec in PROBE_NODES[kind]["input"]["required"].items()
            ],
            "outputs": [
                {"name": name, "type": name, "links": []} for name in PROBE_NODES[kind]["output"]
            ],
        }
        for node_id, (kind, mode) in nodes.items()
    }
    table = []
    for link_id, (origin, slot, target, target_slot) in enumerate(links, 1):
        saved[target]["inputs"][target_slot]["link"] = link_id
        saved[origin]["outputs"][slot]["links"].append(link_id)
        kind = saved[origin]["outputs"][slot]["type"]
        table.append([link_id, origin, slot, target, target_slot, kind])
    return {"nodes": list(saved.values()), "links": table}


def object_info_from_mappings(mappings: dict, display_names: dict | None = None) -> dict:
    """What GET /object_info returns for these classes (JSON round-trip turns tuples to lists)."""
    display_names = display_names or {}
    info = {}
    for name, cls in mappings.items():
        types = cls.INPUT_TYPES()
        returns = tuple(cls.RETURN_TYPES)
        entry = {
            "input": types,
            "input_order": {part: list(spec.keys()) for part, spec in types.items()},
            "output": returns,
            "output_is_list": getattr(cls, "OUTPUT_IS_LIST", [False] * len(returns)),
            "output_name": getattr(cls, "RETURN_NAMES", returns),
            "name": name,
            "display_name": display_names.get(name, name),
            "description": getattr(cls, "DESCRIPTION", ""),
            "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
            "category": getattr(cls, "CATEGORY", "sd"),
            "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
        }
        if hasattr(cls, "OUTPUT_TOOLTIPS"):
            entry["output_tooltips"] = cls.OUTPUT_TOOLTIPS
        for flag in ("DEPRECATED", "EXPERIMENTAL"):
            if getattr(cls, flag, False):
                entry[flag.lower()] = True
        if hasattr(cls, "API_NODE"):
            entry["api_node"] = cls.API_NODE
        info[name] = json.loads(json.dumps(entry, default=str))
    return info


def choices(kind, options: dict) -> list | None:
    """A COMBO's choices: the list that is its type, or its "options" under the word COMBO."""
    if isinstance(kind, list):
        return kind
    if kind == "COMBO":
        return options.get("options")
    return None


def _check_widget(name: str, kind, options: dict, value) -> str | None:
    kind_name = type_name(kind)
    allowed = choices(kind, options)
    if allowed is not None:
        return None if value in allowed else f"{name}={value!r} is not one of {allowed}"
    expected = {"INT": int, "FLOAT": (int, float), "STRING": str, "BOOLEAN": bool}[kind_name]
    if not isinstance(value, expected) or (kind_name != "BOOLEAN" and isinstance(value, bool)):
        return f"{name}={value!r} is not a {kind_name}"
    if kind_name in ("INT", "FLOAT"):
        low, high = options.get("min", -np.inf), options.get("max", np.inf)
        if not low <= value <= high:
            return f"{name}={value} is outside [{low}, {high}]"
    return None


def validate_workflow(ui_workflow: dict, object_info: dict) -> list[str]:
    """Every problem found: unknown node types, link type mismatches, widget values out of spec."""
    errors = []
    nodes = {node["id"]: node for node in ui_workflow["nodes"]}
    for node in ui_workflow["nodes"]:
        if node["type"] in VIRTUAL_NODES:
            continue
        if node["type"] not in object_info:
            errors.append(f"node {node['id']}: unknown type {node['type']}")
            continue
        spec = {name: (kind, opts) for name, kind, opts in node_inputs(object_info[node["type"]])}
        for name, value in widget_values(node, object_info[node["type"]]).items():
            problem = _check_widget(name, *spec[name], value)
            if problem:
                errors.append(f"node {node['id']} ({node['type']}): {problem}")
    for link_id, source, slot, target, target_slot, link_type in ui_workflow["links"]:
        source_node, target_node = nodes.get(source), nodes.get(target)
        if source_node is None or target_node is None:
            errors.append(
                f"link {link_id}: missing node {source if source_node is None else target}"
            )
            continue
        if source_node["type"] in VIRTUAL_NODES or target_node["type"] in VIRTUAL_NODES:
            continue
        if source_node["type"] not in object_info or target_node["type"] not in object_info:
            continue  # already reported as unknown
        produced = object_info[source_node["type"]]["output"][slot]
        input_name = target_node["inputs"][target_slot]["name"]
        spec = {name: kind for name, kind, _ in node_inputs(object_info[target_node["type"]])}
        if input_name not in spec:
            errors.append(f"link {link_id}: {target_node['type']} has no input {input_name}")
            continue
        wanted = type_name(spec[input_name])
        if not types_match(produced, wanted) or not types_match(link_type, produced):
            errors.append(
                f"link {link_id}: {source_node['type']} output {slot} is {produced} (link says "
                f"{link_type}) but {target_node['type']}.{input_name} takes {wanted}"
            )
    return errors


def _order(prompt: dict) -> list[str]:
    """Topological order of the prompt's nodes (a cycle is an error, as in ComfyUI)."""
    order, state = [], {}

    def visit(node_id: str) -> None:
        if state.get(node_id) == "done":
            return
        if state.get(node_id) == "open":
            raise ValueError(f"cycle through node {node_id}")
        state[node_id] = "open"
        for value in prompt[node_id]["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt:
                visit(str(value[0]))
        state[node_id] = "done"
        order.append(node_id)

    for node_id in prompt:
        visit(node_id)
    return order


def validate_as_host(cls, inputs: dict, linked: list[str] | tuple[str, ...] = ()):
    """``cls.VALIDATE_INPUTS`` called as the host calls it: with only the inputs its signature
    names (all of them for ``**kwargs``), those wired from another node as None."""
    spec = inspect.getfullargspec(cls.VALIDATE_INPUTS)
    named = {
        name: None if name in linked else value
        for name, value in inputs.items()
        if spec.varkw or name in spec.args
    }
    return cls.VALIDATE_INPUTS(**named)


def run_api_prompt(
    prompt: dict, mappings: dict, core_shims: dict | None = None, extra_pnginfo: dict | None = None
) -> dict:
    """Execute an API prompt headlessly: {node_id: {"result": tuple, "ui": dict | None}}."""
    classes = {**(core_shims or {}), **mappings}
    outputs = {}
    for node_id in _order(prompt):
        entry = prompt[node_id]
        cls = classes[entry["class_type"]]
        kwargs = {
            name: outputs[str(value[0])]["result"][value[1]]
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt
            else plain_value(value)
            for name, value in entry["inputs"].items()
        }
        hidden = cls.INPUT_TYPES().get("hidden", {})
        for name, kind in hidden.items():
            kwargs[name] = {
                "PROMPT": prompt,
                "UNIQUE_ID": node_id,
                "EXTRA_PNGINFO": extra_pnginfo,
            }.get(kind)
        instance = cls()
        if hasattr(cls, "VALIDATE_INPUTS"):
            linked = [name for name, value in entry["inputs"].items() if isinstance(value, list)]
            widgets = {name: kwargs[name] for name in entry["inputs"]}
            verdict = validate_as_host(cls, widgets, linked)
            if verdict is not True:
                raise ValueError(f"node {node_id} ({entry['class_type']}): {verdict}")
        returned = getattr(instance, cls.FUNCTION)(**kwargs)
        if isinstance(returned, dict):
            outputs[node_id] = {
                "result": tuple(returned.get("result", ())),
                "ui": returned.get("ui"),
            }
        else:
            outputs[node_id] = {"result": tuple(returned), "ui": None}
    return outputs


def core_shims(input_dir: str | Path) -> dict:
    """Minimal stand-ins for the host's loaders, reading input_dir like ComfyUI's input folder."""
    folder = Path(input_dir)

    class LoadImage:
        RETURN_TYPES = ("IMAGE", "MASK")
        FUNCTION = "load_image"

        @classmethod
        def INPUT_TYPES(cls):
            files = sorted(p.name for p in folder.glob("*.png"))
            return {"required": {"image": (files, {"image_upload": True})}}

        def load_image(self, image):
            # ComfyUI: RGB in 0..1 as [1, H, W, 3]; mask = 1 - alpha (zeros without alpha).
            picture = Image.open(folder / image)
            rgb = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
            if "A" in picture.getbands():
                alpha = np.asarray(picture.getchannel("A"), dtype=np.float32) / 255.0
                mask = 1.0 - torch.from_numpy(alpha)
            else:
                mask = torch.zeros(rgb.shape[:2])
            return torch.from_numpy(rgb)[None], mask[None]

    class LoadImageMask:
        RETURN_TYPES = ("MASK",)
        FUNCTION = "load_image"

        @classmethod
        def INPUT_TYPES(cls):
            files = sorted(p.name for p in folder.glob("*.png"))
            channels = (["alpha", "red", "green", "blue"],)
            return {"required": {"image": (files, {"image_upload": True}), "channel": channels}}

        def load_image(self, image, channel):
            # ComfyUI: the chosen channel in 0..1, inverted for alpha; zeros if the file lacks it.
            picture = Image.open(folder / image)
            band = channel[0].upper()
            if band not in picture.getbands():
                picture = picture.convert("RGBA")
            mask = torch.from_numpy(np.asarray(picture.getchannel(band), dtype=np.float32) / 255.0)
            return ((1.0 - mask if band == "A" else mask)[None],)

    class LoadVideo:
        RETURN_TYPES = ("VIDEO",)
        FUNCTION = "load_video"

        @classmethod
        def INPUT_TYPES(cls):
            files = sorted(p.name for p in folder.glob("*.mp4"))
            return {"required": {"file": (files, {"video_upload": True})}}

        def load_video(self, file):
            frames, fps, audio = av_io.read_video(folder / file)
            return ({"frames": frames, "fps": fps, "audio": audio},)

    class GetVideoComponents:
        RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
        RETURN_NAMES = ("images", "audio", "fps")
        FUNCTION = "get_components"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"video": ("VIDEO",)}}

        def get_components(self, video):
            return video["frames"], video["audio"], video["fps"]

    return {
        "LoadImage": LoadImage,
        "LoadImageMask": LoadImageMask,
        "LoadVideo": LoadVideo,
        "GetVideoComponents": GetVideoComponents,
    }
