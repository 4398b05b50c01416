"""Subgraphs in UI workflows: ``ui_to_api`` expands them as the frontend's graphToPrompt does.

The frontend saves a subgraph node with the subgraph's id as its ``type`` and the
subgraph under ``definitions.subgraphs``: its nodes and links (objects, not arrays), its
``inputs``/``outputs`` slots, and links from its input node (id -10) and into its output node
(id -20). The API prompt names an inner node "<subgraph node id>:<inner id>". These tests collapse
nodes of the shipped text_to_video.json into subgraphs the way the frontend writes them and check
that the prompt is the flat workflow's, node ids aside, and that it renders the same.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import uuid
from pathlib import Path
from unittest import mock

import pytest
import torch
from skyreels_pack import NODE_CLASS_MAPPINGS
from workflow_tools import (
    core_shims,
    object_info_from_mappings,
    run_api_prompt,
    validate_workflow,
)

from skyreels_core.__main__ import main
from skyreels_core.errors import InputError
from skyreels_core.workflow_format import (
    expand_subgraphs,
    is_link,
    node_inputs,
    ui_to_api,
    widget_table,
    with_widget_values,
)

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "workflows" / "assets"
TEXT_TO_VIDEO = ROOT / "workflows" / "text_to_video.json"
with mock.patch.dict(os.environ, {"SKYREELS_INPUT_DIR": str(ASSETS)}):
    OBJECT_INFO = object_info_from_mappings({**core_shims(ASSETS), **NODE_CLASS_MAPPINGS})
# Node ids in text_to_video.json.
MODEL, ENCODER, VIDEO_VAE, AUDIO_VAE, PROMPT, NEGATIVE, MASK = 1, 2, 3, 4, 5, 6, 7
SAMPLER, DECODE_VIDEO, DECODE_AUDIO, SAVE = 8, 9, 10, 11


def flat() -> dict:
    return json.loads(TEXT_TO_VIDEO.read_text())


def _node(workflow: dict, node_id) -> dict:
    return next(node for node in workflow["nodes"] if node["id"] == node_id)


def _widget_type(node: dict, name: str) -> str:
    kind = next(k for n, k, _ in node_inputs(OBJECT_INFO[node["type"]]) if n == name)
    return "COMBO" if isinstance(kind, list) else kind


def collapse(
    workflow: dict,
    members: list[int],
    name: str,
    promote: list[tuple[int, str, object]] = (),
    proxy_widgets: bool = False,
) -> tuple[dict, int]:
    """(the workflow with ``members`` converted to one subgraph node, that node's id), saved as
    the frontend saves it: one subgraph input per outside output feeding the members (linked to
    each member input it fed), one subgraph output per member output read outside; each
    ``promote`` entry (member id, widget, value) adds a subgraph input linked to that widget,
    whose value the subgraph node keeps in ``widgets_values`` (its unconnected input is not
    saved: compressWidgetInputSlots), listed in ``properties.proxyWidgets`` if asked."""
    workflow = copy.deepcopy(workflow)
    members = set(members)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    instance_id = workflow["last_node_id"] = workflow["last_node_id"] + 1
    next_link = workflow["last_link_id"]

    def new_link() -> int:
        nonlocal next_link
        next_link += 1
        return next_link

    subgraph_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}/{sorted(members)}"))
    inputs, outputs, inner_links = [], [], []
    instance_inputs, instance_outputs, root_links = [], [], []
    by_origin: dict[tuple, int] = {}
    for link in workflow["links"]:
        link_id, origin, slot, target, target_slot, kind = link
        if origin in members and target in members:
            inner_links.append(dict(zip(("id", "origin_id", "origin_slot", "target_id",
                                         "target_slot", "type"), link)))  # fmt: skip
        elif target in members:  # into the subgraph: through one of its inputs
            if (origin, slot) not in by_origin:
                socket = nodes[target]["inputs"][target_slot]
                by_origin[(origin, slot)] = len(inputs)
                inputs.append({"id": str(uuid.uuid4()), "name": socket["name"], "type": kind,
                               "linkIds": []})  # fmt: skip
                instance_inputs.append({"name": socket["name"], "type": kind, "link": link_id})
                root_links.append([link_id, origin, slot, instance_id, len(instance_inputs) - 1,
                                   kind])  # fmt: skip
            index = by_origin[(origin, slot)]
            inner = new_link()
            inputs[index]["linkIds"].append(inner)
            inner_links.append({"id": inner, "origin_id": -10, "origin_slot": index,
                                "target_id": target, "target_slot": target_slot,
                                "type": kind})  # fmt: skip
            nodes[target]["inputs"][target_slot]["link"] = inner
        elif origin in members:  # out of the subgraph: through one of its outputs
            if (origin, slot) not in by_origin:
                by_origin[(origin, slot)] = len(outputs)
                inner = new_link()
                output = nodes[origin]["outputs"][slot]
                outputs.append({"id": str(uuid.uuid4()), "name": output["name"], "type": kind,
                                "linkIds": [inner]})  # fmt: skip
                instance_outputs.append({"name": output["name"], "type": kind, "links": []})
                inner_links.append({"id": inner, "origin_id": origin, "origin_slot": slot,
                                    "target_id": -20, "target_slot": len(outputs) - 1,
                                    "type": kind})  # fmt: skip
                inside = [i for i in output["links"] if target_id(workflow, i) in members]
                output["links"] = [*inside, inner]
            index = by_origin[(origin, slot)]
            instance_outputs[index]["links"].append(link_id)
            root_links.append([link_id, instance_id, index, target, target_slot, kind])
        else:
            root_links.append(link)
    values = []
    for member, widget, value in promote:
        node = nodes[member]
        kind = _widget_type(node, widget) if node["type"] in OBJECT_INFO else "STRING"
        sockets = node.setdefault("inputs", [])
        socket = next((s for s in sockets if s["name"] == widget), None)
        if socket is None:
            socket = {"name": widget, "type": kind, "widget": {"name": widget}, "link": None}
            sockets.append(socket)
        inner = new_link()
        socket["link"] = inner
        inputs.append({"id": str(uuid.uuid4()), "name": widget, "type": kind, "linkIds": [inner]})
        inner_links.append({"id": inner, "origin_id": -10, "origin_slot": len(inputs) - 1,
                            "target_id": member, "target_slot": sockets.index(socket),
                            "type": kind})  # fmt: skip
        values.append(value)
    instance = {
        "id": instance_id, "type": subgraph_id, "pos": [0, 0], "size": [300, 200], "flags": {},
        "order": 0, "mode": 0, "inputs": instance_inputs, "outputs": instance_outputs,
        "title": name, "properties": {},
    }  # fmt: skip
    if values:
        instance["widgets_values"] = values
    if proxy_widgets:
        instance["properties"]["proxyWidgets"] = [["-1", widget] for _, widget, _ in promote]
    definition = {
        "id": subgraph_id, "version": 1,
        "state": {"lastGroupId": 0, "lastNodeId": max(members), "lastLinkId": next_link,
                  "lastRerouteId": 0},
        "revision": 0, "config": {}, "name": name,
        "inputNode": {"id": -10, "bounding": [0, 0, 120, 60]},
        "outputNode": {"id": -20, "bounding": [900, 0, 120, 60]},
        "inputs": inputs, "outputs": outputs, "widgets": [],
        "nodes": [node for node in workflow["nodes"] if node["id"] in members],
        "groups": [], "links": inner_links, "extra": {},
    }  # fmt: skip
    workflow["nodes"] = [n for n in workflow["nodes"] if n["id"] not in members] + [instance]
    kept = {link[0] for link in root_links}
    for node in workflow["nodes"]:  # an output read by two members now feeds one input
        for output in node.get("outputs") or []:
            output["links"] = [i for i in output.get("links") or [] if i in kept]
    workflow["links"] = root_links
    workflow["last_link_id"] = next_link
    workflow.setdefault("definitions", {}).setdefault("subgraphs", []).append(definition)
    return workflow, instance_id


def target_id(workflow: dict, link_id: int):
    return next(link[3] for link in workflow["links"] if link[0] == link_id)


def renamed(prompt: dict, ids: dict) -> dict:
    """``prompt`` with node ids renamed (``ids``: old -> new), in its keys and its links."""
    ids = {str(old): str(new) for old, new in ids.items()}
    return {
        ids.get(node_id, node_id): {
            "class_type": node["class_type"],
            "inputs": {
                name: [ids.get(value[0], value[0]), value[1]] if is_link(value) else value
                for name, value in node["inputs"].items()
            },
        }
        for node_id, node in prompt.items()
    }


def test_a_collapsed_node_converts_as_the_flat_workflow():
    workflow, instance = collapse(flat(), [PROMPT], "Prompt")
    prompt = ui_to_api(workflow, OBJECT_INFO)
    assert f"{instance}:{PROMPT}" in prompt and str(PROMPT) not in prompt
    assert prompt[f"{instance}:{PROMPT}"]["_meta"]["title"] == "Prompt"
    assert renamed(prompt, {}) == renamed(ui_to_api(flat(), OBJECT_INFO), {PROMPT: f"{instance}:5"})


def test_a_collapsed_chain_with_shared_inputs_and_several_outputs():
    """The sampler and both decoders: video_vae feeds two inner nodes through one subgraph
    input; images, fps and audio leave through three outputs."""
    members = [SAMPLER, DECODE_VIDEO, DECODE_AUDIO]
    workflow, instance = collapse(flat(), members, "Render")
    definition = workflow["definitions"]["subgraphs"][0]
    shared = next(i for i in definition["inputs"] if i["type"] == "SKYREELS_VIDEO_VAE")
    assert len(shared["linkIds"]) == 2 and len(definition["outputs"]) == 3
    expected = renamed(ui_to_api(flat(), OBJECT_INFO), {m: f"{instance}:{m}" for m in members})
    assert renamed(ui_to_api(workflow, OBJECT_INFO), {}) == expected
    # The expanded UI workflow is a flat one: every link's types check out.
    assert validate_workflow(expand_subgraphs(workflow, OBJECT_INFO), OBJECT_INFO) == []


def test_a_promoted_widget_sends_the_subgraph_nodes_value():
    inner = _node(flat(), PROMPT)["widgets_values"][0]
    for proxy_widgets in (False, True):
        workflow, instance = collapse(
            flat(), [PROMPT], "Prompt", [(PROMPT, "prompt", "a blue square")], proxy_widgets
        )
        definition = workflow["definitions"]["subgraphs"][0]
        assert definition["nodes"][0]["widgets_values"] == [inner] != ["a blue square"]
        prompt = ui_to_api(workflow, OBJECT_INFO)
        assert prompt[f"{instance}:{PROMPT}"]["inputs"]["prompt"] == "a blue square"
        edited = with_widget_values(flat(), OBJECT_INFO, {(str(PROMPT), "prompt"): "a blue square"})
        ids = {PROMPT: f"{instance}:{PROMPT}"}
        assert renamed(prompt, {}) == renamed(ui_to_api(edited, OBJECT_INFO), ids)


def test_a_legacy_proxy_widget_and_an_unknown_value_count():
    """proxyWidgets naming an inner node's widget (older frontends, no subgraph input): the
    i-th value is that widget's. Without proxyWidgets, values that do not line up with the
    promoted inputs leave the inner node's own values (as the frontend does)."""
    workflow, instance = collapse(flat(), [PROMPT], "Prompt")
    node = _node(workflow, instance)
    node["properties"]["proxyWidgets"] = [[str(PROMPT), "prompt"]]
    node["widgets_values"] = ["a green triangle"]
    prompt = ui_to_api(workflow, OBJECT_INFO)
    assert prompt[f"{instance}:{PROMPT}"]["inputs"]["prompt"] == "a green triangle"
    del node["properties"]["proxyWidgets"]  # no promoted input: nothing to give the value to
    inner = _node(flat(), PROMPT)["widgets_values"][0]
    assert ui_to_api(workflow, OBJECT_INFO)[f"{instance}:{PROMPT}"]["inputs"]["prompt"] == inner


def test_legacy_proxy_widgets_reach_into_a_nested_subgraph():
    """Older frontends' ``proxyWidgets`` on the outer subgraph node name a nested subgraph node's
    widget: its promoted input (its own value passed over), or "<inner id>: <widget>", that
    node's proxy of a widget inside it. A malformed entry keeps its value's place."""
    nested, inner = collapse(flat(), [PROMPT], "Prompt", [(PROMPT, "prompt", "inner")])
    workflow, outer = collapse(nested, [inner, NEGATIVE], "Prompts")
    node = _node(workflow, outer)
    node["properties"]["proxyWidgets"] = [["-1"], [str(inner), "prompt"]]
    node["widgets_values"] = [None, "a green triangle"]
    prompt = ui_to_api(workflow, OBJECT_INFO)
    assert prompt[f"{outer}:{inner}:{PROMPT}"]["inputs"]["prompt"] == "a green triangle"
    nested, inner = collapse(flat(), [PROMPT], "Prompt")  # nothing promoted: a proxy of 5's
    workflow, outer = collapse(nested, [inner, NEGATIVE], "Prompts")
    node = _node(workflow, outer)
    node["properties"]["proxyWidgets"] = [[str(inner), f"{PROMPT}: prompt"]]
    node["widgets_values"] = ["a green triangle"]
    prompt = ui_to_api(workflow, OBJECT_INFO)
    assert prompt[f"{outer}:{inner}:{PROMPT}"]["inputs"]["prompt"] == "a green triangle"


def test_a_proxied_primitive_node_gives_its_value_to_the_widget_it_feeds():
    """A PrimitiveNode inside a subgraph shown on the subgraph node (a legacy ``proxyWidgets``
    entry naming its widget): the value saved there is the one its target sends. A "$$" entry
    before it (a preview the frontend shows, no value) is not taken for its value."""
    workflow, instance = collapse(flat(), [PROMPT], "Prompt")
    definition = workflow["definitions"]["subgraphs"][0]
    encoder = definition["nodes"][0]
    encoder["widgets_values"] = ["its own"]
    socket = {"name": "prompt", "type": "STRING", "widget": {"name": "prompt"}, "link": 95}
    encoder["inputs"].append(socket)
    definition["nodes"].append({"id": 90, "type": "PrimitiveNode", "mode": 0, "inputs": [],
                                "outputs": [{"name": "STRING", "type": "STRING", "links": [95],
                                             "widget": {"name": "prompt"}}],
                                "widgets_values": ["the primitive's"]})  # fmt: skip
    slot = len(encoder["inputs"]) - 1
    definition["links"].append({"id": 95, "origin_id": 90, "origin_slot": 0, "target_id": PROMPT,
                                "target_slot": slot, "type": "STRING"})  # fmt: skip
    node = _node(workflow, instance)
    node["properties"]["proxyWidgets"] = [["90", "$$canvas-image-preview"], ["90", "value"]]
    node["widgets_values"] = [None, "a green triangle"]
    prompt = ui_to_api(workflow, OBJECT_INFO)
    assert prompt[f"{instance}:{PROMPT}"]["inputs"]["prompt"] == "a green triangle"


def test_a_promoted_seed_skips_an_older_frontends_control_value():
    workflow, instance = collapse(flat(), [SAMPLER], "Sampler", [(SAMPLER, "seed", 7)])
    _node(workflow, instance)["widgets_values"] = [7, "randomize"]  # control_after_generate
    prompt = ui_to_api(workflow, OBJECT_INFO)
    assert prompt[f"{instance}:{SAMPLER}"]["inputs"]["seed"] == 7


def test_values_set_are_kept_in_the_named_copy_frontend_1_58_saves():
    """Frontend 1.58 saves each node's values by name too (``widgets_values_named``; a subgraph
    node's under its promoted inputs), and its "Restore widget values by name" setting reopens
    a workflow from those: a value set only in the positional list reopened (and was queued
    again) as the old one."""
    workflow, instance = collapse(flat(), [SAMPLER], "Sampler", [(SAMPLER, "steps", 3)])
    prompt_node = _node(workflow, PROMPT)
    prompt_node["widgets_values_named"] = {"prompt": prompt_node["widgets_values"][0]}
    _node(workflow, instance)["widgets_values_named"] = {"steps": 3}
    chosen = {(str(PROMPT), "prompt"): "a red ball", (f"{instance}:{SAMPLER}", "steps"): 5}
    edited = with_widget_values(workflow, OBJECT_INFO, chosen)
    assert _node(edited, PROMPT)["widgets_values"][0] == "a red ball"
    assert _node(edited, PROMPT)["widgets_values_named"] == {"prompt": "a red ball"}
    assert _node(edited, instance)["widgets_values"] == [5]
    assert _node(edited, instance)["widgets_values_named"] == {"steps": 5}


def test_promoted_widgets_saved_without_control_values_keep_their_places():
    """Frontend 1.58 saves one value per promoted widget, no control value after the seed (older
    ones saved it): reading a control value whenever a promoted widget has one took steps'
    value for a control and sent the inner node's steps instead of 12."""
    promote = [(SAMPLER, "seed", 7), (SAMPLER, "steps", 12)]
    for saved in ([7, 12], [7, "randomize", 12]):
        workflow, instance = collapse(flat(), [SAMPLER], "Sampler", promote)
        _node(workflow, instance)["widgets_values"] = saved
        inputs = ui_to_api(workflow, OBJECT_INFO)[f"{instance}:{SAMPLER}"]["inputs"]
        assert (inputs["seed"], inputs["steps"]) == (7, 12)


def test_a_promoted_input_fed_by_a_primitive_node_sends_the_inner_widgets_value():
    """The frontend sends a promoted widget's value only while the subgraph node's input is
    unconnected; wired to a legacy PrimitiveNode, which resolves to nothing, the inner widget
    keeps its own value (as graphToPrompt does in frontend 1.58): sending the subgraph
    node's value rendered another seed than the browser queues."""
    workflow, instance = collapse(flat(), [SAMPLER], "Sampler", [(SAMPLER, "seed", 7)])
    inner_seed = ui_to_api(flat(), OBJECT_INFO)[str(SAMPLER)]["inputs"]["seed"]
    assert (
        ui_to_api(workflow, OBJECT_INFO)[f"{instance}:{SAMPLER}"]["inputs"]["seed"]
        == 7
        != (inner_seed)
    )
    node = _node(workflow, instance)
    node.setdefault("inputs", []).append({"name": "seed", "type": "INT", "link": 900})
    workflow["nodes"].append({"id": 901, "type": "PrimitiveNode", "mode": 0, "inputs": [],
                              "outputs": [{"name": "INT", "type": "INT", "links": [900]}],
                              "widgets_values": [99, "fixed"]})  # fmt: skip
    workflow["links"].append([900, 901, 0, instance, len(node["inputs"]) - 1, "INT"])
    prompt = ui_to_api(workflow, OBJECT_INFO)
    assert prompt[f"{instance}:{SAMPLER}"]["inputs"]["seed"] == inner_seed


def test_a_nested_subgraph_expands_by_recursion_and_the_outer_value_wins():
    inner_workflow, inner = collapse(flat(), [PROMPT], "Prompt", [(PROMPT, "prompt", "inner")])
    workflow, outer = collapse(
        inner_workflow, [inner, NEGATIVE], "Prompts", [(inner, "prompt", "a blue square")]
    )
    assert len(workflow["definitions"]["subgraphs"]) == 2
    prompt = ui_to_api(workflow, OBJECT_INFO)
    assert prompt[f"{outer}:{inner}:{PROMPT}"]["inputs"]["prompt"] == "a blue square"
    edited = with_widget_values(flat(), OBJECT_INFO, {(str(PROMPT), "prompt"): "a blue square"})
    ids = {PROMPT: f"{outer}:{inner}:{PROMPT}", NEGATIVE: f"{outer}:{NEGATIVE}"}
    assert renamed(prompt, {}) == renamed(ui_to_api(edited, OBJECT_INFO), ids)
    # Not promoted further, the nested subgraph node's own value is sent.
    workflow, outer = collapse(inner_workflow, [inner, NEGATIVE], "Prompts")
    assert ui_to_api(workflow, OBJECT_INFO)[f"{outer}:{inner}:{PROMPT}"]["inputs"]["prompt"] == (
        "inner"
    )


def _two_instances(promoted: bool) -> tuple[dict, int, int]:
    """The prompt and the negative prompt as two nodes of one "Encode" subgraph."""
    promote = [(PROMPT, "prompt", "a red circle bounces on the floor")] if promoted else []
    workflow, first = collapse(flat(), [PROMPT], "Encode", promote)
    second = workflow["last_node_id"] = workflow["last_node_id"] + 1
    negative = _node(workflow, NEGATIVE)
    twin = copy.deepcopy(_node(workflow, first))
    twin.update(id=second, title="Negative prompt")
    twin["inputs"][0]["link"] = negative["inputs"][0]["link"]
    twin["outputs"][0]["links"] = negative["outputs"][0]["links"]
    if promoted:
        twin["widgets_values"] = [""]
    for link in workflow["links"]:
        if link[3] == NEGATIVE:
            link[3] = second
        if link[1] == NEGATIVE:
            link[1] = second
    workflow["nodes"] = [n for n in workflow["nodes"] if n["id"] != NEGATIVE] + [twin]
    return workflow, first, second


def test_one_subgraph_used_by_two_nodes():
    workflow, first, second = _two_instances(promoted=True)
    prompt = ui_to_api(workflow, OBJECT_INFO)
    ids = {PROMPT: f"{first}:{PROMPT}", NEGATIVE: f"{second}:{PROMPT}"}
    assert renamed(prompt, {}) == renamed(ui_to_api(flat(), OBJECT_INFO), ids)
    # Each node keeps its own promoted value: one is set without touching the other.
    table = widget_table(workflow, OBJECT_INFO)
    assert table[f"{first}:{PROMPT}"][1]["prompt"] == "a red circle bounces on the floor"
    assert table[f"{second}:{PROMPT}"][1]["prompt"] == ""
    edited = with_widget_values(workflow, OBJECT_INFO, {(f"{second}:{PROMPT}", "prompt"): "blur"})
    assert _node(edited, second)["widgets_values"] == ["blur"]
    assert edited["definitions"] == workflow["definitions"]
    sent = ui_to_api(edited, OBJECT_INFO)
    assert sent[f"{second}:{PROMPT}"]["inputs"]["prompt"] == "blur"
    assert sent[f"{first}:{PROMPT}"] == prompt[f"{first}:{PROMPT}"]


def _inner_values(workflow: dict) -> dict[str, dict]:
    """Subgraph name -> {inner node id: its saved widget values}: what frontend 1.42.15 sends
    for a promoted widget (1.27 and 1.58 send the subgraph node's own value)."""
    return {
        definition["name"]: {node["id"]: node.get("widgets_values") for node in definition["nodes"]}
        for definition in workflow["definitions"]["subgraphs"]
    }


def test_a_value_set_on_a_promoted_widget_is_saved_inside_too():
    """A workflow the queue command set a promoted widget in, reopened in frontend 1.42, queued
    the old value: that release sends the inner widget's saved value. The inner widget, and a
    nested subgraph node's own value on the way, are set too, and the prompt is unchanged."""
    steps = _node(flat(), SAMPLER)["widgets_values"][2]  # after the seed and its control
    workflow, instance = collapse(flat(), [SAMPLER], "Sampler", [(SAMPLER, "steps", steps)])
    edited = with_widget_values(workflow, OBJECT_INFO, {(f"{instance}:{SAMPLER}", "steps"): 3})
    assert _node(edited, instance)["widgets_values"] == [3]
    assert _inner_values(edited)["Sampler"][SAMPLER][2] == 3
    assert ui_to_api(edited, OBJECT_INFO)[f"{instance}:{SAMPLER}"]["inputs"]["steps"] == 3
    original = _node(flat(), PROMPT)["widgets_values"][0]
    nested, inner = collapse(flat(), [PROMPT], "Prompt", [(PROMPT, "prompt", original)])
    workflow, outer = collapse(nested, [inner, NEGATIVE], "Prompts", [(inner, "prompt", original)])
    widget = (f"{outer}:{inner}:{PROMPT}", "prompt")
    edited = with_widget_values(workflow, OBJECT_INFO, {widget: "a blue square"})
    assert _node(edited, outer)["widgets_values"] == ["a blue square"]
    values = _inner_values(edited)
    assert values["Prompt"] == {PROMPT: ["a blue square"]}
    assert values["Prompts"][inner] == ["a blue square"]  # the nested subgraph node's own
    assert values["Prompts"][NEGATIVE] == _node(flat(), NEGATIVE)["widgets_values"]
    assert ui_to_api(edited, OBJECT_INFO)[widget[0]]["inputs"]["prompt"] == "a blue square"


def test_an_inner_value_other_subgraph_nodes_send_is_left_alone():
    """A definition used by two subgraph nodes keeps one inner value for both: it takes the
    value set on one's promoted widget only where the other holds that value too, and not where
    the other is muted, or inside a muted one (its contents are not expanded to be compared)."""
    workflow, first, second = _two_instances(promoted=True)
    _node(workflow, first)["widgets_values"] = ["a cat"]
    edited = with_widget_values(workflow, OBJECT_INFO, {(f"{second}:{PROMPT}", "prompt"): "a cat"})
    assert _inner_values(edited)["Encode"] == {PROMPT: ["a cat"]}
    _node(workflow, second)["widgets_values"] = ["blur"]
    _node(workflow, second)["mode"] = 2
    edited = with_widget_values(workflow, OBJECT_INFO, {(f"{first}:{PROMPT}", "prompt"): "blur"})
    assert _node(edited, first)["widgets_values"] == ["blur"]
    assert edited["definitions"] == workflow["definitions"]
    # The other one muted inside a muted subgraph node.
    original = _node(flat(), PROMPT)["widgets_values"][0]
    nested, inner = collapse(flat(), [PROMPT], "Prompt", [(PROMPT, "prompt", original)])
    twin = copy.deepcopy(_node(nested, inner))
    workflow, outer = collapse(nested, [inner], "Prompts")
    _node(workflow, outer)["mode"] = 2
    twin.update(id=960, outputs=[], inputs=[{**s, "link": None} for s in twin["inputs"]])
    workflow["nodes"].append(twin)
    edited = with_widget_values(workflow, OBJECT_INFO, {(f"960:{PROMPT}", "prompt"): "blur"})
    assert _node(edited, 960)["widgets_values"] == ["blur"]
    assert edited["definitions"] == workflow["definitions"]


def test_an_inner_value_another_subgraph_node_sends_behind_a_primitive_node_is_left_alone():
    """A subgraph node whose promoted input a legacy PrimitiveNode feeds sends the inner value
    (as frontend 1.58 does): setting the other node's promoted widget must not change it."""
    workflow, first, second = _two_instances(promoted=True)
    node = _node(workflow, second)
    node["inputs"].append({"name": "prompt", "type": "STRING", "link": 900})
    workflow["nodes"].append({"id": 901, "type": "PrimitiveNode", "mode": 0, "inputs": [],
                              "outputs": [{"name": "STRING", "type": "STRING", "links": [900]}],
                              "widgets_values": [""]})  # fmt: skip
    workflow["links"].append([900, 901, 0, second, len(node["inputs"]) - 1, "STRING"])
    before = ui_to_api(workflow, OBJECT_INFO)[f"{second}:{PROMPT}"]["inputs"]["prompt"]
    edited = with_widget_values(workflow, OBJECT_INFO, {(f"{first}:{PROMPT}", "prompt"): "blur"})
    assert edited["definitions"] == workflow["definitions"]
    assert ui_to_api(edited, OBJECT_INFO)[f"{second}:{PROMPT}"]["inputs"]["prompt"] == before


def test_promoted_values_saved_by_name_are_read_and_set_inside_too():
    """Some packs save a node's widget values by name (a dict), a subgraph node's too."""
    workflow, instance = collapse(flat(), [SAMPLER], "Sampler", [(SAMPLER, "steps", 20)])
    _node(workflow, instance)["widgets_values"] = {"steps": 12}
    assert ui_to_api(workflow, OBJECT_INFO)[f"{instance}:{SAMPLER}"]["inputs"]["steps"] == 12
    edited = with_widget_values(workflow, OBJECT_INFO, {(f"{instance}:{SAMPLER}", "steps"): 3})
    assert _node(edited, instance)["widgets_values"] == {"steps": 3}
    assert _inner_values(edited)["Sampler"][SAMPLER][2] == 3


def test_an_inner_value_a_link_replaces_in_the_other_subgraph_node_is_written():
    """A second subgraph node whose input is linked sends the link, not the inner value: the
    value set on the first one's promoted widget is still saved inside."""
    workflow, first = collapse(flat(), [SAMPLER], "Sampler", [(SAMPLER, "steps", 20)])
    second = copy.deepcopy(_node(workflow, first))
    second.update(id=950, widgets_values=[7], outputs=[])
    second["inputs"] = [*second["inputs"], {"name": "steps", "type": "INT", "link": 950}]
    source = {"id": 951, "type": "SkyReelsV4MaskContinue", "mode": 0, "inputs": [],
              "outputs": [{"name": "frames", "type": "INT", "links": [950]}]}  # fmt: skip
    workflow["nodes"] += [second, source]
    workflow["links"].append([950, 951, 1, 950, len(second["inputs"]) - 1, "INT"])
    edited = with_widget_values(workflow, OBJECT_INFO, {(f"{first}:{SAMPLER}", "steps"): 5})
    assert _inner_values(edited)["Sampler"][SAMPLER][2] == 5
    sent = ui_to_api(edited, OBJECT_INFO)
    assert (
        sent[f"{first}:{SAMPLER}"]["inputs"]["steps"],
        sent[f"950:{SAMPLER}"]["inputs"]["steps"],
    ) == (5, ["951", 1])


def test_a_widget_shared_by_two_subgraph_nodes_is_set_for_both_or_refused():
    workflow, first, second = _two_instances(promoted=False)
    with pytest.raises(InputError, match=rf"{second}:{PROMPT}\.prompt would take the same value"):
        with_widget_values(workflow, OBJECT_INFO, {(f"{first}:{PROMPT}", "prompt"): "blur"})
    both = {(f"{n}:{PROMPT}", "prompt"): "blur" for n in (first, second)}
    edited = with_widget_values(workflow, OBJECT_INFO, both)
    assert edited["definitions"]["subgraphs"][0]["nodes"][0]["widgets_values"] == ["blur"]
    sent = ui_to_api(edited, OBJECT_INFO)
    assert sent[f"{first}:{PROMPT}"]["inputs"]["prompt"] == "blur"
    assert sent[f"{second}:{PROMPT}"]["inputs"]["prompt"] == "blur"


def test_one_promoted_widget_feeding_two_nodes():
    """A subgraph input linked to the prompts of both encoders: one value on the subgraph node."""
    workflow, instance = collapse(
        flat(), [PROMPT, NEGATIVE], "Prompts", [(PROMPT, "prompt", "a blue square")]
    )
    definition = workflow["definitions"]["subgraphs"][0]
    promoted = definition["inputs"][-1]
    negative = next(node for node in definition["nodes"] if node["id"] == NEGATIVE)
    socket = {"name": "prompt", "type": "STRING", "widget": {"name": "prompt"}, "link": 99}
    negative["inputs"].append(socket)
    link = {"id": 99, "origin_id": -10, "origin_slot": 1, "target_id": NEGATIVE}
    definition["links"].append({**link, "target_slot": 3, "type": "STRING"})
    promoted["linkIds"].append(99)
    prompt = ui_to_api(workflow, OBJECT_INFO)
    for member in (PROMPT, NEGATIVE):
        assert prompt[f"{instance}:{member}"]["inputs"]["prompt"] == "a blue square"
    with pytest.raises(InputError, match=f"subgraph node {instance}'s widget 'prompt', which also"):
        with_widget_values(workflow, OBJECT_INFO, {(f"{instance}:{PROMPT}", "prompt"): "x"})
    both = {(f"{instance}:{member}", "prompt"): "x" for member in (PROMPT, NEGATIVE)}
    edited = with_widget_values(workflow, OBJECT_INFO, both)
    assert _node(edited, instance)["widgets_values"] == ["x"]
    inner = edited["definitions"]["subgraphs"][0]["nodes"]
    assert [node["widgets_values"][0] for node in inner] == ["x", "x"]  # what 1.42 sends


@pytest.mark.parametrize("mode", [2, 4], ids=["muted", "bypassed"])
def test_muted_and_bypassed_nodes_inside_and_as_subgraph_nodes(mode):
    members = [NEGATIVE, MASK, SAMPLER]
    muted = flat()
    _node(muted, NEGATIVE)["mode"] = mode
    workflow, instance = collapse(muted, members, "Sample")
    expected = renamed(ui_to_api(muted, OBJECT_INFO), {m: f"{instance}:{m}" for m in members})
    assert renamed(ui_to_api(workflow, OBJECT_INFO), {}) == expected
    assert "negative" not in expected[f"{instance}:{SAMPLER}"]["inputs"]
    # A muted or bypassed subgraph node: its nodes do not run, and it is dropped or bypassed
    # as one node (the frontend since its PR #8494).
    workflow, instance = collapse(flat(), [PROMPT], "Prompt")
    _node(workflow, instance)["mode"] = mode
    off = flat()
    _node(off, PROMPT)["mode"] = mode
    assert ui_to_api(workflow, OBJECT_INFO) == ui_to_api(off, OBJECT_INFO)


def test_broken_subgraphs_are_named():
    workflow, instance = collapse(flat(), [PROMPT], "Prompt")
    missing = copy.deepcopy(workflow)
    del missing["definitions"]
    with pytest.raises(InputError, match="is a subgraph .* whose definition the workflow does not"):
        ui_to_api(missing, OBJECT_INFO)
    dangling = copy.deepcopy(workflow)
    dangling["definitions"]["subgraphs"][0]["links"] = []
    with pytest.raises(InputError, match=rf"node {instance}:{PROMPT} .* takes link \d+, which "):
        ui_to_api(dangling, OBJECT_INFO)
    looped = copy.deepcopy(workflow)
    definition = looped["definitions"]["subgraphs"][0]
    definition["nodes"].append({**_node(workflow, instance), "id": 99})
    with pytest.raises(InputError, match="contains itself"):
        ui_to_api(looped, OBJECT_INFO)


def test_what_the_frontend_cannot_bind_is_dropped_as_it_drops_it():
    """The frontend follows a subgraph output only through its saved ``linkIds`` and binds a
    subgraph node's saved inputs to the subgraph's by name: an output without linkIds, or an
    input saved under a name the subgraph lacks, feeds nothing there, so the prompt (and the
    server's verdict on it) is the one the browser queues."""
    workflow, instance = collapse(flat(), [SAMPLER], "Sampler")
    intact = ui_to_api(workflow, OBJECT_INFO)
    assert intact[str(DECODE_VIDEO)]["inputs"]["av_latent"] == [f"{instance}:{SAMPLER}", 0]
    unlinked = copy.deepcopy(workflow)
    unlinked["definitions"]["subgraphs"][0]["outputs"][0]["linkIds"] = []
    assert "av_latent" not in ui_to_api(unlinked, OBJECT_INFO)[str(DECODE_VIDEO)]["inputs"]
    renamed_input = copy.deepcopy(workflow)
    socket = _node(renamed_input, instance)["inputs"][0]
    bound = intact[f"{instance}:{SAMPLER}"]["inputs"]
    name = next(n for n, v in bound.items() if v == _source_of(workflow, socket["link"]))
    socket["name"] = "renamed"
    assert name not in ui_to_api(renamed_input, OBJECT_INFO)[f"{instance}:{SAMPLER}"]["inputs"]


def _source_of(workflow: dict, link_id: int) -> list:
    link = next(link for link in workflow["links"] if link[0] == link_id)
    return [str(link[1]), link[2]]


def test_the_queue_command_sets_widgets_inside_subgraphs(capsys, tmp_path):
    """--set, --seeds and --prompts address inner nodes by their prompt ids (NODE:INNER)."""
    workflow, instance = collapse(
        flat(), [PROMPT, SAMPLER], "Render", [(PROMPT, "prompt", "a blue square")]
    )
    path = tmp_path / "subgraph.json"
    path.write_text(json.dumps(workflow))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a green triangle\n")
    table = widget_table(workflow, OBJECT_INFO)
    assert table[f"{instance}:{PROMPT}"] == ("Prompt", {"prompt": "a blue square"})
    server_info = mock.patch(
        "skyreels_core.batch_queue.ComfyServer.object_info", return_value=OBJECT_INFO
    )
    with server_info:
        code = main(["queue", str(path), "--seeds", "3-4", "--prompts", str(prompts),
                     "--set", f"{instance}:{SAMPLER}.steps=4", "--dry-run"])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and len(lines) == 2
    for seed, line in zip((3, 4), lines, strict=True):
        sent = json.loads(line)
        expected = with_widget_values(
            flat(), OBJECT_INFO,
            {("8", "seed"): seed, ("8", "steps"): 4, ("5", "prompt"): "a green triangle"},
        )  # fmt: skip
        ids = {PROMPT: f"{instance}:{PROMPT}", SAMPLER: f"{instance}:{SAMPLER}"}
        assert renamed(sent, {}) == renamed(ui_to_api(expected, OBJECT_INFO), ids)


def test_the_queue_command_refuses_a_shared_widget_in_one_line(capsys, tmp_path):
    workflow, first, second = _two_instances(promoted=False)
    path = tmp_path / "shared.json"
    path.write_text(json.dumps(workflow))
    with mock.patch("skyreels_core.batch_queue.ComfyServer.object_info", return_value=OBJECT_INFO):
        code = main(["queue", str(path), "--set", f"{first}:{PROMPT}.prompt=x", "--dry-run"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"error: widget {first}:{PROMPT}.prompt: it is inside subgraph ")
    assert f"set {second}:{PROMPT}.prompt to the same value too" in err[0]


def test_a_workflow_without_subgraphs_is_left_as_it_is():
    workflow = flat()
    assert expand_subgraphs(workflow, OBJECT_INFO) is workflow


def _render(prompt: dict, workflow: dict, inputs: Path) -> dict:
    return run_api_prompt(prompt, NODE_CLASS_MAPPINGS, core_shims(inputs), {"workflow": workflow})


def _same(mine, theirs) -> bool:
    """Equal outputs: tensors bit for bit, dataclasses (AVLatent) and dicts field by field."""
    if isinstance(mine, torch.Tensor):
        return torch.equal(mine, theirs)
    if dataclasses.is_dataclass(mine):
        return _same(vars(mine), vars(theirs))
    if isinstance(mine, dict):
        return mine.keys() == theirs.keys() and all(_same(mine[k], theirs[k]) for k in mine)
    if isinstance(mine, list | tuple):
        return len(mine) == len(theirs) and all(map(_same, mine, theirs))
    return mine == theirs


def test_a_subgraph_workflow_renders_as_the_flat_one(tmp_path, monkeypatch):
    """A nested subgraph (the prompt, its widget promoted, inside the sampler and decoders)."""
    inputs = tmp_path / "input"
    shutil.copytree(ASSETS, inputs)
    monkeypatch.setenv("SKYREELS_INPUT_DIR", str(inputs))
    monkeypatch.setenv("SKYREELS_OUTPUT_DIR", str(tmp_path / "output"))
    members = [SAMPLER, DECODE_VIDEO, DECODE_AUDIO]
    nested, inner = collapse(flat(), [PROMPT], "Prompt", [(PROMPT, "prompt", "a blue square")])
    workflow, outer = collapse(nested, [*members, inner], "Render")
    plain = with_widget_values(flat(), OBJECT_INFO, {(str(PROMPT), "prompt"): "a blue square"})
    torch.manual_seed(0)
    expected = _render(ui_to_api(plain, OBJECT_INFO), plain, inputs)
    torch.manual_seed(0)
    got = _render(ui_to_api(workflow, OBJECT_INFO), workflow, inputs)
    assert _same(got[f"{outer}:{inner}:{PROMPT}"]["result"], expected[str(PROMPT)]["result"])
    for member in members:
        assert _same(got[f"{outer}:{member}"]["result"], expected[str(member)]["result"])
    assert got[f"{outer}:{DECODE_VIDEO}"]["result"][0].shape[0] == 33
    saved = [got[str(SAVE)]["ui"], expected[str(SAVE)]["ui"]]
    assert [len(ui["skyreels_videos"]) for ui in saved] == [1, 1]
