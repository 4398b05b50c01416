"""Builds the shareable UI-format workflows in this folder from short Python descriptions.

Hand-edited LiteGraph JSON drifts from the node definitions (widget order, link ids); generating
it from ``INPUT_TYPES`` keeps every file loadable. Run ``python workflows/build_workflows.py`` after
changing a node's inputs; a test checks the committed files equal this script's output.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from skyreels_core.workflow_format import control_values, is_widget

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# The host's core nodes the workflows use: (input name, type) in order, trailing UI-only widget
# values the frontend stores after the inputs (upload buttons, audio players), and outputs.
HOST_NODES: dict[str, dict] = {
    "LoadImage": {
        "inputs": [("image", "COMBO")],
        "trailing": ["image"],
        "outputs": [("IMAGE", "IMAGE"), ("MASK", "MASK")],
    },
    "LoadImageMask": {
        "inputs": [("image", "COMBO"), ("channel", "COMBO")],
        "trailing": ["image"],
        "outputs": [("MASK", "MASK")],
    },
    "LoadVideo": {
        "inputs": [("file", "COMBO")],
        "trailing": ["image"],
        "outputs": [("VIDEO", "VIDEO")],
    },
    "GetVideoComponents": {
        "inputs": [("video", "VIDEO")],
        "trailing": [],
        "outputs": [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")],
    },
}


NODE_WIDTH, NODE_GAP = 320, 60  # the gap clears the next title (30 px) and its badge
# What the host's frontend draws, in canvas px: the title, a row per socket pair and per widget
# (four for a multi-line text box), and the picture a file picker shows under its widgets (a
# 320 px wide node shows a square image or the 64 px example clip at about 300 px); without the
# picture a node would overlap the one below it once the file loads.
TITLE_HEIGHT, ROW_HEIGHT = 30, 24
PREVIEW_HEIGHT = {
    "LoadImage": 310,
    "LoadImageMask": 310,
    "LoadVideo": 310,
    "SkyReelsV4LoadAudio": 70,
}


def node_height(type_: str, rows: int, text_boxes: int) -> int:
    """``rows``: socket pairs and widgets; a multi-line text box takes four rows."""
    return TITLE_HEIGHT + ROW_HEIGHT * (rows + 3 * text_boxes) + PREVIEW_HEIGHT.get(type_, 0)


def _load_pack_mappings() -> dict[str, type]:
    name = "skyreels_workflow_builder_pack"
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.NODE_CLASS_MAPPINGS


@dataclass
class Node:
    id: int
    type: str
    widgets: dict
    links_in: dict = field(default_factory=dict)
    title: str | None = None


@dataclass
class Workflow:
    """A graph under construction; ``add`` returns the node so later nodes can link to its outputs."""

    mappings: dict[str, type]
    nodes: list[Node] = field(default_factory=list)

    def add(self, type_: str, title: str | None = None, **values) -> Node:
        widgets = {k: v for k, v in values.items() if not isinstance(v, tuple)}
        links = {k: v for k, v in values.items() if isinstance(v, tuple)}
        node = Node(len(self.nodes) + 1, type_, widgets, links, title)
        self.nodes.append(node)
        return node

    def _definition(
        self, type_: str
    ) -> tuple[list[tuple[str, object, dict]], list[tuple[str, str]], list]:
        if type_ in HOST_NODES:
            host = HOST_NODES[type_]
            inputs = [(name, [] if kind == "COMBO" else kind, {}) for name, kind in host["inputs"]]
            return inputs, host["outputs"], host["trailing"]
        cls = self.mappings[type_]
        types = cls.INPUT_TYPES()
        inputs = [
            (name, spec[0], spec[1] if len(spec) > 1 else {})
            for section in ("required", "optional")
            for name, spec in types.get(section, {}).items()
        ]
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        # An audio_upload combo gets the frontend's upload button and player, saved as nulls.
        trailing = [None, None] if any(o.get("audio_upload") for _, _, o in inputs) else []
        return inputs, list(zip(names, cls.RETURN_TYPES)), trailing

    def to_json(self) -> dict:
        depth: dict[int, int] = {}
        for node in self.nodes:  # nodes are added in dependency order
            depth[node.id] = 1 + max(
                (depth[src.id] for src, _ in node.links_in.values()), default=-1
            )
        links, out_links, in_links = [], {}, {}
        for node in self.nodes:
            inputs, _, _ = self._definition(node.type)
            # Sockets first, then widgets converted to inputs because a link feeds them.
            socket_names = [name for name, kind, opts in inputs if not is_widget(kind, opts)]
            socket_names += [
                name
                for name, kind, opts in inputs
                if is_widget(kind, opts) and name in node.links_in
            ]
            for name, (source, slot) in node.links_in.items():
                _, outputs, _ = self._definition(source.type)
                link = [
                    len(links) + 1,
                    source.id,
                    slot,
                    node.id,
                    socket_names.index(name),
                    outputs[slot][1],
                ]
                links.append(link)
                in_links[(node.id, name)] = link[0]
                out_links.setdefault((source.id, slot), []).append(link[0])
        column_bottoms: dict[int, int] = {}  # the next free y in each column
        serialised = []
        for order, node in enumerate(sorted(self.nodes, key=lambda n: (depth[n.id], n.id))):
            inputs, outputs, trailing = self._definition(node.type)
            socket_inputs, widget_inputs, widgets_values = [], [], []
            for name, kind, options in inputs:
                if is_widget(kind, options) and name in node.links_in:
                    widget_type = "COMBO" if isinstance(kind, list) else kind
                    link = in_links[(node.id, name)]
                    widget_inputs.append(
                        {"name": name, "type": widget_type, "widget": {"name": name}, "link": link}
                    )
                if is_widget(kind, options):
                    if name not in node.widgets and "default" not in options:
                        raise KeyError(f"{node.type}.{name} needs a value")
                    widgets_values.append(node.widgets.get(name, options.get("default")))
                    # the control mode, then a COMBO's filter list
                    widgets_values += ["fixed", ""][: control_values(name, kind, options)]
                else:
                    link = in_links.get((node.id, name))
                    socket_inputs.append({"name": name, "type": kind, "link": link})
            socket_inputs = _shown_sockets(socket_inputs)
            text_boxes = sum(bool(options.get("multiline")) for _, _, options in inputs)
            rows = max(len(socket_inputs), len(outputs)) + len(widgets_values + trailing)
            height = node_height(node.type, rows, text_boxes)
            top = column_bottoms.get(depth[node.id], 40)
            column_bottoms[depth[node.id]] = top + height + NODE_GAP
            entry = {
                "id": node.id,
                "type": node.type,
                "pos": [40 + (NODE_WIDTH + NODE_GAP) * depth[node.id], top],
                "size": [NODE_WIDTH, height],
                "flags": {},
                "order": order,
                "mode": 0,
                "inputs": socket_inputs + widget_inputs,
                "outputs": [
                    {
                        "name": name,
                        "type": kind,
                        "links": out_links.get((node.id, slot), []),
                        "slot_index": slot,
                    }
                    for slot, (name, kind) in enumerate(outputs)
                ],
                "properties": {"Node name for S&R": node.type},
                "widgets_values": widgets_values + list(trailing),
            }
            if node.title:
                entry["title"] = node.title
            serialised.append(entry)
        return {
            "last_node_id": len(self.nodes),
            "last_link_id": len(links),
            "nodes": sorted(serialised, key=lambda n: n["id"]),
            "links": links,
            "groups": [],
            "config": {},
            "extra": {},
            "version": 0.4,
        }


DEMO = "skyreels-v4-demo (bundled)"
DEMO_LORA = "demo palette shift (bundled)"
EXAMPLE_TAKE = "skyreels_v4_take.av_latent.safetensors"  # render_takes' latent at seed 42
DEMO_SAMPLING = {
    "steps": 20,
    "shift": 3.0,
    "solver": "unipc",
    "video_guidance": 6.0,  # chosen for the demo model on validation scenes (see skyreels_core/render.py)
    "audio_guidance": 1.5,
    "fps": 16.0,
}


def _shown_sockets(sockets: list[dict]) -> list[dict]:
    """The sockets a node shows once loaded: Image References grows its image_N sockets as they
    are linked, one empty one after the last linked (js/skyreels_logic.js planReferenceSockets),
    so the saved node lists those, and its height fits them."""
    images = [s for s in sockets if re.fullmatch(r"image_\d+", s["name"])]
    last = max((int(s["name"][6:]) for s in images if s["link"] is not None), default=0)
    return [s for s in sockets if s not in images or int(s["name"][6:]) <= last + 1]


def _base(workflow: Workflow, prompt: str):
    """Loaders and prompts every workflow shares; returns (model, encoder, video VAE, audio VAE, text, negative)."""
    model = workflow.add("SkyReelsV4ModelLoader", model_name=DEMO, dtype="auto", attention="sdpa")
    encoder = workflow.add(
        "SkyReelsV4TextEncoderLoader", encoder=DEMO, dtype="auto", hidden_layer=-1
    )
    video_vae = workflow.add("SkyReelsV4VideoVAELoader", vae_name=DEMO, dtype="auto")
    audio_vae = workflow.add("SkyReelsV4AudioVAELoader", vae_name=DEMO)
    text = workflow.add(
        "SkyReelsV4TextEncode", title="Prompt", text_encoder=(encoder, 0), prompt=prompt
    )
    negative = workflow.add(
        "SkyReelsV4TextEncode", title="Negative prompt", text_encoder=(encoder, 0), prompt=""
    )
    return model, encoder, video_vae, audio_vae, text, negative


def _sampler(workflow, model, video_vae, audio_vae, text, condition, seed=42, **links):
    """The sampler with live previews; ``links`` adds optional sockets (negative, references) or
    feeds a widget (fps) as (node, slot) pairs."""
    return workflow.add(
        "SkyReelsV4Sampler",
        model=(model, 0),
        text=(text, 0),
        condition=(condition, 0),
        audio_vae=(audio_vae, 0),
        video_vae=(video_vae, 0),
        seed=seed,
        **{**DEMO_SAMPLING, **links},
    )


def _sample_and_save(
    workflow, model, video_vae, audio_vae, text, condition, prefix, seed=42, **links
):
    """Sampler -> decoders -> save."""
    sampler = _sampler(workflow, model, video_vae, audio_vae, text, condition, seed, **links)
    return _decode_and_save(workflow, sampler, video_vae, audio_vae, prefix)


def _decode_and_save(workflow, latent_node, video_vae, audio_vae, prefix):
    frames = workflow.add(
        "SkyReelsV4DecodeVideo", av_latent=(latent_node, 0), video_vae=(video_vae, 0)
    )
    _save_with_sound(workflow, (frames, 0), (frames, 1), latent_node, audio_vae, prefix)
    return latent_node


def _save_with_sound(workflow, frames, fps, latent_node, audio_vae, prefix) -> None:
    """Decode ``latent_node``'s sound and save it with ``frames`` at ``fps`` ((node, slot) pairs)."""
    audio = workflow.add(
        "SkyReelsV4DecodeAudio", av_latent=(latent_node, 0), audio_vae=(audio_vae, 0)
    )
    workflow.add(
        "SkyReelsV4SaveVideo",
        frames=frames,
        fps=fps,
        audio=(audio, 0),
        filename_prefix=f"skyreels_v4/{prefix}",
    )


def text_to_video(m) -> Workflow:
    w = Workflow(m)
    model, _, video_vae, audio_vae, text, negative = _base(w, "a red circle bounces on the floor")
    condition = w.add("SkyReelsV4MaskT2V", video_vae=(video_vae, 0), width=64, height=64, frames=33)
    _sample_and_save(
        w, model, video_vae, audio_vae, text, condition, "text_to_video", negative=(negative, 0)
    )
    return w


def image_to_video(m) -> Workflow:
    w = Workflow(m)
    model, _, video_vae, audio_vae, text, negative = _base(w, "a blue square bounces on the floor")
    image = w.add("LoadImage", title="First frame", image="skyreels_v4_first_frame.png")
    condition = w.add("SkyReelsV4MaskI2V", video_vae=(video_vae, 0), image=(image, 0), frames=33)
    _sample_and_save(
        w, model, video_vae, audio_vae, text, condition, "image_to_video", negative=(negative, 0)
    )
    return w


def _source_clip(w: Workflow):
    """The example clip's frames (0), sound (1) and fps (2): a workflow that keeps any of its
    frames renders at its fps (wired to the Sampler), or the kept footage plays at 16 fps."""
    video = w.add("LoadVideo", title="Source clip", file="skyreels_v4_source_clip.mp4")
    return w.add("GetVideoComponents", video=(video, 0))


def extend_video(m) -> Workflow:
    w = Workflow(m)
    model, _, video_vae, audio_vae, text, negative = _base(
        w, "a green triangle bounces on the floor"
    )
    clip = _source_clip(w)
    condition = w.add(
        "SkyReelsV4MaskExtend",
        video_vae=(video_vae, 0),
        source=(clip, 0),
        frames=33,
        known_frames=9,
    )
    _sample_and_save(w, model, video_vae, audio_vae, text, condition, "extend_video",
                     negative=(negative, 0), fps=(clip, 2))  # fmt: skip
    return w


def first_last_frame(m) -> Workflow:
    w = Workflow(m)
    model, _, video_vae, audio_vae, text, negative = _base(w, "a yellow circle moves right")
    first = w.add("LoadImage", title="First frame", image="skyreels_v4_first_frame.png")
    last = w.add("LoadImage", title="Last frame", image="skyreels_v4_last_frame.png")
    condition = w.add(
        "SkyReelsV4MaskInterpolate",
        video_vae=(video_vae, 0),
        first=(first, 0),
        last=(last, 0),
        frames=33,
    )
    _sample_and_save(
        w, model, video_vae, audio_vae, text, condition, "first_last_frame", negative=(negative, 0)
    )
    return w


def keyframes(m) -> Workflow:
    w = Workflow(m)
    model, _, video_vae, audio_vae, text, negative = _base(
        w, "a green triangle bounces on the floor"
    )
    clip = _source_clip(w)
    condition = w.add(
        "SkyReelsV4MaskKeyframes",
        video_vae=(video_vae, 0),
        images=(clip, 0),
        keyframe_indices="0, 16, 32",
        frames=33,
    )
    _sample_and_save(w, model, video_vae, audio_vae, text, condition, "keyframes",
                     negative=(negative, 0), fps=(clip, 2))  # fmt: skip
    return w


def masked_edit(m) -> Workflow:
    w = Workflow(m)
    model, _, video_vae, audio_vae, text, negative = _base(w, "a red square bounces on the floor")
    clip = _source_clip(w)
    mask = w.add(
        "LoadImageMask",
        title="Edit mask (white = change)",
        image="skyreels_v4_edit_mask.png",
        channel="red",
    )
    condition = w.add(
        "SkyReelsV4MaskEdit", video_vae=(video_vae, 0), source=(clip, 0), mask=(mask, 0)
    )
    _sample_and_save(w, model, video_vae, audio_vae, text, condition, "masked_edit",
                     negative=(negative, 0), fps=(clip, 2))  # fmt: skip
    return w


def video_to_audio(m) -> Workflow:
    """The source clip's own frames saved with generated sound: the sampler runs at the clip's
    fps (so the sound lasts as long as the clip) and the frames skip the video codec."""
    w = Workflow(m)
    model, _, video_vae, audio_vae, text, negative = _base(
        w, "a green triangle bounces on the floor"
    )
    clip = _source_clip(w)
    condition = w.add("SkyReelsV4MaskVideoToAudio", video_vae=(video_vae, 0), source=(clip, 0))
    sampler = _sampler(
        w, model, video_vae, audio_vae, text, condition, negative=(negative, 0), fps=(clip, 2)
    )
    _save_with_sound(w, (clip, 0), (clip, 2), sampler, audio_vae, "video_to_audio")
    return w


def video_to_video(m) -> Workflow:
    """A clip restyled by its prompt: its video and sound encoded as the sampler's ``initial``,
    denoised from 0.6, so its motion and timing stay while the prompt recolours it; the sampler
    renders at the clip's own rate."""
    w = Workflow(m)
    model, _, video_vae, audio_vae, text, negative = _base(w, "a red triangle bounces on the floor")
    clip = _source_clip(w)
    video = w.add(
        "SkyReelsV4EncodeVideo", frames=(clip, 0), video_vae=(video_vae, 0), fps=(clip, 2)
    )
    start = w.add(
        "SkyReelsV4EncodeAudio", av_latent=(video, 0), audio=(clip, 1), audio_vae=(audio_vae, 0)
    )
    condition = w.add("SkyReelsV4MaskT2V", video_vae=(video_vae, 0), width=64, height=64, frames=33)
    _sample_and_save(w, model, video_vae, audio_vae, text, condition, "video_to_video",
                     negative=(negative, 0), initial=(start, 0), denoise_start=0.6,
                     fps=(clip, 2))  # fmt: skip
    return w


def lora_style(m) -> Workflow:
    """Text-to-video through Load LoRA with the bundled palette-shift LoRA: "a red circle"
    renders green and hums at green's pitch (strength 0 renders it red again)."""
    w = Workflow(m)
    model, _, video_vae, audio_vae, text, negative = _base(w, "a red circle bounces on the floor")
    lora = w.add("SkyReelsV4LoraLoader", model=(model, 0), lora_name=DEMO_LORA, strength=1.0)
    condition = w.add("SkyReelsV4MaskT2V", video_vae=(video_vae, 0), width=64, height=64, frames=33)
    _sample_and_save(
        w, lora, video_vae, audio_vae, text, condition, "lora_style", negative=(negative, 0)
    )
    return w


def reroll_sound(m) -> Workflow:
    """A text-to-video render whose sound is made again: its video latents kept whole by Keep
    Video, a second sampler with another seed at the first one's fps, the first clip's frames
    saved with the second sound."""
    w = Workflow(m)
    model, _, video_vae, audio_vae, text, negative = _base(w, "a blue circle bounces on the floor")
    condition = w.add("SkyReelsV4MaskT2V", video_vae=(video_vae, 0), width=64, height=64, frames=33)
    first = _sampler(w, model, video_vae, audio_vae, text, condition, negative=(negative, 0))
    frames = w.add("SkyReelsV4DecodeVideo", av_latent=(first, 0), video_vae=(video_vae, 0))
    keep = w.add("SkyReelsV4MaskKeepVideo", av_latent=(first, 0))
    second = _sampler(w, model, video_vae, audio_vae, text, keep, seed=7, negative=(negative, 0),
                      fps=(frames, 1))  # fmt: skip
    second.title = "Sampler (new sound)"
    _save_with_sound(w, (frames, 0), (frames, 1), second, audio_vae, "reroll_sound")
    return w


def references(m) -> Workflow:
    w = Workflow(m)
    model, _, video_vae, audio_vae, text, negative = _base(w, "a blue circle bounces on the floor")
    image = w.add("LoadImage", title="Reference image", image="skyreels_v4_reference.png")
    sound = w.add(
        "SkyReelsV4LoadAudio", title="Reference sound", audio="skyreels_v4_reference_sound.wav"
    )
    image_refs = w.add(
        "SkyReelsV4ImageReferences",
        video_vae=(video_vae, 0),
        width=64,
        height=64,
        image_1=(image, 0),
    )
    refs = w.add(
        "SkyReelsV4AudioReference",
        audio_vae=(audio_vae, 0),
        audio=(sound, 0),
        references=(image_refs, 0),
    )
    condition = w.add("SkyReelsV4MaskT2V", video_vae=(video_vae, 0), width=64, height=64, frames=33)
    _sample_and_save(
        w, model, video_vae, audio_vae, text, condition, "references", seed=7,
        negative=(negative, 0), references=(refs, 0),
    )  # fmt: skip
    return w


def storyboard(m) -> Workflow:
    w = Workflow(m)
    model = w.add("SkyReelsV4ModelLoader", model_name=DEMO, dtype="auto", attention="sdpa")
    encoder = w.add("SkyReelsV4TextEncoderLoader", encoder=DEMO, dtype="auto", hidden_layer=-1)
    video_vae = w.add("SkyReelsV4VideoVAELoader", vae_name=DEMO, dtype="auto")
    audio_vae = w.add("SkyReelsV4AudioVAELoader", vae_name=DEMO)
    shots = w.add(
        "SkyReelsV4MultiShotTextEncode",
        text_encoder=(encoder, 0),
        shots="[0-16] a red circle bounces on the floor\n[17-32] a blue square bounces on the floor",
        frames=33,
    )
    grid = w.add("LoadImage", title="Storyboard (2 x 2 panels)", image="skyreels_v4_storyboard.png")
    refs = w.add(
        "SkyReelsV4StoryboardReference",
        video_vae=(video_vae, 0),
        grid=(grid, 0),
        rows=2,
        columns=2,
        panels=0,
        width=64,
        height=64,
    )
    condition = w.add("SkyReelsV4MaskT2V", video_vae=(video_vae, 0), width=64, height=64, frames=33)
    _sample_and_save(
        w, model, video_vae, audio_vae, shots, condition, "storyboard", seed=3, references=(refs, 0)
    )
    return w


def _first_window(w: Workflow):
    """A 33-frame green triangle decoded: (model, video VAE, audio VAE, prompt, negative prompt,
    its frames, its sound), the clip long_video and extend_to_length continue."""
    model, _, video_vae, audio_vae, text, negative = _base(
        w, "a green triangle bounces on the floor"
    )
    first = _sampler(
        w, model, video_vae, audio_vae, text,
        w.add("SkyReelsV4MaskT2V", video_vae=(video_vae, 0), width=64, height=64, frames=33),
        negative=(negative, 0),
    )  # fmt: skip
    frames = w.add("SkyReelsV4DecodeVideo", av_latent=(first, 0), video_vae=(video_vae, 0))
    audio = w.add("SkyReelsV4DecodeAudio", av_latent=(first, 0), audio_vae=(audio_vae, 0))
    return model, video_vae, audio_vae, text, negative, frames, audio


def long_video(m) -> Workflow:
    """Two windows of 33 frames joined into 61: the second continues the first's last 5 frames
    (Continue Clip), and Join Clips cross-fades frames and sound where they overlap. The second
    Sampler has a seed of its own: at the first's, its sound came out a near copy of the first
    window's, clicks at the first window's bounces. It renders at the first clip's fps, wired
    in: at a rate of its own its sound lasted another length than its frames."""
    w = Workflow(m)
    model, video_vae, audio_vae, text, negative, first_frames, first_audio = _first_window(w)
    window = w.add(
        "SkyReelsV4MaskContinue", video_vae=(video_vae, 0), clip=(first_frames, 0), frames=33,
        overlap=5,
    )  # fmt: skip
    second = _sampler(
        w, model, video_vae, audio_vae, text, window, 43, negative=(negative, 0),
        fps=(first_frames, 1),
    )  # fmt: skip
    second_frames = w.add("SkyReelsV4DecodeVideo", av_latent=(second, 0), video_vae=(video_vae, 0))
    second_audio = w.add("SkyReelsV4DecodeAudio", av_latent=(second, 0), audio_vae=(audio_vae, 0))
    joined = w.add(
        "SkyReelsV4JoinClips", frames_a=(first_frames, 0), audio_a=(first_audio, 0),
        frames_b=(second_frames, 0), audio_b=(second_audio, 0), overlap=(window, 1),
        fps=(first_frames, 1),
    )  # fmt: skip
    w.add(
        "SkyReelsV4SaveVideo", frames=(joined, 0), fps=(first_frames, 1), audio=(joined, 1),
        filename_prefix="skyreels_v4/long_video",
    )  # fmt: skip
    return w


def extend_to_length(m) -> Workflow:
    """A 33-frame render continued to 89 frames by Extend to Length: two more windows, each
    starting with the clip's last 5 frames, joined on as long_video joins its one by hand."""
    w = Workflow(m)
    model, video_vae, audio_vae, text, negative, frames, audio = _first_window(w)
    longer = w.add(
        "SkyReelsV4ExtendToLength", model=(model, 0), text=(text, 0), negative=(negative, 0),
        video_vae=(video_vae, 0), audio_vae=(audio_vae, 0), frames=(frames, 0), audio=(audio, 0),
        fps=(frames, 1), total_frames=89, window_frames=33, overlap=5, seed=42,
        **{k: v for k, v in DEMO_SAMPLING.items() if k != "fps"},
    )  # fmt: skip
    w.add(
        "SkyReelsV4SaveVideo", frames=(longer, 0), fps=(frames, 1), audio=(longer, 1),
        filename_prefix="skyreels_v4/extend_to_length",
    )  # fmt: skip
    return w


def _low_res_take(w: Workflow):
    """A 64 px clip of 17 frames and its first and last frames at 128 px in one sampling pass;
    returns (sampler, video VAE, audio VAE)."""
    model, _, video_vae, audio_vae, text, negative = _base(w, "a blue circle bounces on the floor")
    condition = w.add("SkyReelsV4MaskT2V", video_vae=(video_vae, 0), width=64, height=64, frames=17)
    sampler = w.add(
        "SkyReelsV4Sampler", model=(model, 0), text=(text, 0), condition=(condition, 0),
        audio_vae=(audio_vae, 0), video_vae=(video_vae, 0), negative=(negative, 0), seed=42,
        keyframe_indices="0, 16", keyframe_scale=2, **DEMO_SAMPLING,
    )  # fmt: skip
    return sampler, video_vae, audio_vae


def _refine(w: Workflow, take, video_vae, audio_vae, prefix: str) -> None:
    """The refiner to 128 px at twice the frame rate (17 frames at 16 fps -> 33 at 32 fps)."""
    refiner = w.add("SkyReelsV4RefinerLoader", refiner_name=DEMO, dtype="auto")
    refined = w.add(
        "SkyReelsV4Refine", refiner=(refiner, 0), av_latent=take, scale=2, fps_factor=2,
        reinject_keyframes=True, sparsity=0.75, steps=1, denoise_start=1.0, seed=42,
        video_vae=(video_vae, 0),
    )  # fmt: skip
    _decode_and_save(w, refined, video_vae, audio_vae, prefix)


def low_res_keyframes_refiner(m) -> Workflow:
    """DESIGN §4: the low-res clip and its high-res keyframes in one pass, then the refiner."""
    w = Workflow(m)
    sampler, video_vae, audio_vae = _low_res_take(w)
    _refine(w, (sampler, 0), video_vae, audio_vae, "low_res_keyframes_refiner")
    return w


def render_takes(m) -> Workflow:
    """The first half of low_res_keyframes_refiner, kept: the take saved as an AV latent, with a
    64 px preview clip to judge it by. Queue it over many seeds, refine the keepers later."""
    w = Workflow(m)
    sampler, video_vae, audio_vae = _low_res_take(w)
    w.add("SkyReelsV4SaveAVLatent", av_latent=(sampler, 0), filename_prefix="latents/take")
    _decode_and_save(w, sampler, video_vae, audio_vae, "take_preview")
    return w


def refine_saved_take(m) -> Workflow:
    """The second half: a take saved by render_takes (the example is its seed 42) refined and
    decoded, as low_res_keyframes_refiner does in one go."""
    w = Workflow(m)
    video_vae = w.add("SkyReelsV4VideoVAELoader", vae_name=DEMO, dtype="auto")
    audio_vae = w.add("SkyReelsV4AudioVAELoader", vae_name=DEMO)
    take = w.add("SkyReelsV4LoadAVLatent", av_latent=EXAMPLE_TAKE)
    _refine(w, (take, 0), video_vae, audio_vae, "refine_saved_take")
    return w


WORKFLOWS = {
    "text_to_video": text_to_video,
    "image_to_video": image_to_video,
    "extend_video": extend_video,
    "long_video": long_video,
    "extend_to_length": extend_to_length,
    "first_last_frame": first_last_frame,
    "keyframes": keyframes,
    "masked_edit": masked_edit,
    "video_to_audio": video_to_audio,
    "reroll_sound": reroll_sound,
    "lora_style": lora_style,
    "video_to_video": video_to_video,
    "references": references,
    "storyboard_multishot": storyboard,
    "low_res_keyframes_refiner": low_res_keyframes_refiner,
    "render_takes": render_takes,
    "refine_saved_take": refine_saved_take,
}


def build_assets(folder: Path = HERE / "assets") -> list[Path]:
    """The example inputs the workflows load, rendered from held-out scenes of the demo world."""
    import torch
    from PIL import Image

    from skyreels_core.av_io import write_mp4
    from skyreels_core.demo.world import render_scene, spec_from_caption

    def png(name: str, pixels: torch.Tensor) -> Path:
        path = folder / name
        Image.fromarray((pixels.clamp(0, 1) * 255).round().to(torch.uint8).numpy()).save(path)
        return path

    folder.mkdir(parents=True, exist_ok=True)
    clip = render_scene(spec_from_caption("a green triangle bounces on the floor", seed=1_000_001))
    moving = render_scene(spec_from_caption("a yellow circle moves right", seed=1_000_002))
    reference = render_scene(
        spec_from_caption("a blue circle bounces on the floor", seed=1_000_003)
    )
    panels = [render_scene(spec_from_caption(c, seed=1_000_004)).frames[16] for c in (
        "a red circle bounces on the floor", "a red circle bounces on the floor",
        "a blue square bounces on the floor", "a blue square bounces on the floor")]  # fmt: skip
    mask = torch.zeros(64, 64, 3)
    mask[16:48, 16:48] = 1.0  # white = change
    written = [
        png("skyreels_v4_first_frame.png", moving.frames[0]),
        png("skyreels_v4_last_frame.png", moving.frames[-1]),
        png("skyreels_v4_reference.png", reference.frames[0]),
        png(
            "skyreels_v4_storyboard.png",
            torch.cat([torch.cat(panels[:2], 1), torch.cat(panels[2:], 1)], 0),
        ),
        png("skyreels_v4_edit_mask.png", mask),
    ]
    audio = {"waveform": clip.audio[None], "sample_rate": clip.sample_rate}
    written.append(
        write_mp4(
            folder / "skyreels_v4_source_clip.mp4", clip.frames, clip.fps, audio, overwrite=True
        )
    )
    import wave

    sound = folder / "skyreels_v4_reference_sound.wav"
    with wave.open(str(sound), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(reference.sample_rate)
        handle.writeframes((reference.audio[0] * 32767).round().to(torch.int16).numpy().tobytes())
    return [*written, sound]


THUMBNAIL_PANEL = 128  # px per frame in the 2 x 2 grid the template browser shows


def thumbnail(frames, path: Path) -> Path:
    """The template browser's card for a workflow (``<name>.jpg`` beside its JSON): four frames of
    the clip it renders, evenly spaced, as a 2 x 2 grid. ``frames`` [T, H, W, 3] in 0..1;
    tests/test_workflows.py writes these from each workflow's own render and checks them."""
    import torch
    from PIL import Image

    picks = torch.linspace(0, frames.shape[0] - 1, 4).round().long()
    panels = torch.nn.functional.interpolate(
        frames[picks].permute(0, 3, 1, 2), size=THUMBNAIL_PANEL, mode="nearest"
    ).permute(0, 2, 3, 1)
    grid = torch.cat([torch.cat([panels[0], panels[1]], 1), torch.cat([panels[2], panels[3]], 1)])
    edge = slice(THUMBNAIL_PANEL - 1, THUMBNAIL_PANEL + 1)
    grid[edge], grid[:, edge] = 0.5, 0.5  # grey lines, so the four frames read as four
    pixels = (grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(pixels).save(path, quality=90)
    return path


def build_all() -> dict[str, dict]:
    mappings = _load_pack_mappings()
    return {name: make(mappings).to_json() for name, make in WORKFLOWS.items()}


def main() -> None:
    for path in build_assets():
        print(f"wrote {path.relative_to(ROOT)}")
    for name, workflow in build_all().items():
        (HERE / f"{name}.json").write_text(json.dumps(workflow, indent=2) + "\n")
        print(f"wrote workflows/{name}.json")


if __name__ == "__main__":
    main()
