"""workflow_tools on tiny fake nodes: validation errors, UI -> API conversion, headless execution."""

from __future__ import annotations

import pytest
import torch
from workflow_tools import (
    CONTROLLED_SAVED,
    CONTROLLED_VALUES,
    PROBE_NODES,
    controlled_node_info,
    core_shims,
    object_info_from_mappings,
    probe_workflow,
    run_api_prompt,
    validate_workflow,
)

from skyreels_core.workflow_format import (
    set_widget_value,
    ui_to_api,
    widget_table,
    widget_values,
    with_widget_values,
)


class MakeNumbers:
    RETURN_TYPES = ("TENSOR",)
    FUNCTION = "make"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "count": ("INT", {"default": 3, "min": 1, "max": 8}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 100}),
            }
        }

    def make(self, count, seed):
        return (torch.arange(count, dtype=torch.float32) + seed,)


class Scale:
    RETURN_TYPES = ("TENSOR",)
    FUNCTION = "scale"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "values": ("TENSOR",),
                "mode": (["double", "negate"],),
                "factor": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 4.0}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, **kwargs):
        return True

    def scale(self, values, mode, factor, unique_id):
        self.seen_id = unique_id
        return ((values * 2 if mode == "double" else -values) * factor,)


class Total:
    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "total"
    OUTPUT_NODE = True
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("TENSOR,LIST",)}}

    def total(self, values):
        return {"ui": {"total": [float(values.sum())]}, "result": (float(values.sum()),)}


MAPPINGS = {"MakeNumbers": MakeNumbers, "Scale": Scale, "Total": Total}


def workflow(count=4, mode="double", factor=1.5, link_type="TENSOR", extra=None):
    nodes = [
        {"id": 1, "type": "MakeNumbers", "inputs": [], "widgets_values": [count, 2, "fixed"]},
        {
            "id": 2,
            "type": "Scale",
            "inputs": [{"name": "values", "type": "TENSOR", "link": 10}],
            "widgets_values": [mode, factor],
        },
        {"id": 3, "type": "Total", "inputs": [{"name": "values", "type": "TENSOR", "link": 11}]},
        {"id": 4, "type": "Note", "inputs": [], "widgets_values": ["a note"]},
    ]
    return {
        "nodes": nodes + (extra or []),
        "links": [[10, 1, 0, 2, 0, link_type], [11, 2, 0, 3, 0, "TENSOR"]],
    }


def test_object_info_matches_server_structure():
    info = object_info_from_mappings(MAPPINGS)["Scale"]
    assert info["input_order"] == {
        "required": ["values", "mode", "factor"],
        "hidden": ["unique_id"],
    }
    assert info["input"]["required"]["mode"] == [["double", "negate"]]
    assert info["output"] == ["TENSOR"] and info["output_name"] == ["TENSOR"]
    assert info["output_is_list"] == [False] and info["output_node"] is False
    assert object_info_from_mappings(MAPPINGS)["Total"]["output_node"] is True


def test_valid_workflow_has_no_errors():
    assert validate_workflow(workflow(), object_info_from_mappings(MAPPINGS)) == []


def test_every_kind_of_error_is_reported():
    info = object_info_from_mappings(MAPPINGS)
    unknown = [{"id": 9, "type": "Missing", "inputs": [], "widgets_values": []}]
    errors = validate_workflow(
        workflow(count=99, mode="triple", link_type="IMAGE", extra=unknown), info
    )
    assert len(errors) == 4
    assert any("count=99" in e for e in errors)
    assert any("'triple'" in e for e in errors)
    assert any("link 10" in e for e in errors)
    assert any("unknown type Missing" in e for e in errors)
    wrong_type = validate_workflow(workflow(factor="big"), info)
    assert wrong_type == ["node 2 (Scale): factor='big' is not a FLOAT"]


def test_conversion_equals_hand_written_prompt():
    prompt = ui_to_api(workflow(), object_info_from_mappings(MAPPINGS))
    assert prompt == {
        "1": {
            "inputs": {"count": 4, "seed": 2},
            "class_type": "MakeNumbers",
            "_meta": {"title": "MakeNumbers"},
        },
        "2": {
            "inputs": {"mode": "double", "factor": 1.5, "values": ["1", 0]},
            "class_type": "Scale",
            "_meta": {"title": "Scale"},
        },
        "3": {"inputs": {"values": ["2", 0]}, "class_type": "Total", "_meta": {"title": "Total"}},
    }


def test_bypassed_node_passes_its_input_through():
    ui = workflow()
    ui["nodes"][1]["mode"] = 4
    prompt = ui_to_api(ui, object_info_from_mappings(MAPPINGS))
    assert sorted(prompt) == ["1", "3"]
    assert prompt["3"]["inputs"]["values"] == ["1", 0]


class Mix(Scale):
    """A node whose widgets_values skip a forceInput INT and hold a control value after a
    non-seed INT that has control_after_generate (converted only, never run)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "values": ("TENSOR",),
                "offset": ("INT", {"default": 0, "forceInput": True}),
                "variant": ("INT", {"default": 0, "control_after_generate": True}),
                "factor": ("FLOAT", {"default": 1.0}),
                "label": ("STRING", {"default": ""}),
            }
        }


def test_widget_values_skip_force_input_and_follow_a_control_value():
    """The frontend keeps no value for a forceInput widget and stores a control_after_generate
    value after any INT that has one, seed or not. Misplacing either shifted every later widget
    by one: the prompt silently ran with factor "randomize" and label 1.5."""
    ui = workflow(extra=[{"id": 5, "type": "Mix", "inputs": [
        {"name": "values", "type": "TENSOR", "link": 12},
        {"name": "offset", "type": "INT", "link": None, "widget": {"name": "offset"}},
    ], "widgets_values": [7, "randomize", 1.5, "take"]}])  # fmt: skip
    ui["links"].append([12, 1, 0, 5, 0, "TENSOR"])
    prompt = ui_to_api(ui, object_info_from_mappings({**MAPPINGS, "Mix": Mix}))
    assert prompt["5"]["inputs"] == {
        "variant": 7,
        "factor": 1.5,
        "label": "take",
        "values": ["1", 0],
    }


@pytest.mark.parametrize("frontend", CONTROLLED_SAVED)
def test_control_values_are_skipped_where_each_frontend_saves_them(frontend):
    """A COMBO with control_after_generate is followed by its control and a filter list, a FLOAT
    with one by its control (1.27 gave it none), and a seed that declares it false by nothing.
    Counting one control after INTs only shifted every later widget: label read "randomize"."""
    node = {"widgets_values": list(CONTROLLED_SAVED[frontend])}
    assert widget_values(node, controlled_node_info()) == CONTROLLED_VALUES
    set_widget_value(node, controlled_node_info(), "strength", 0.125)
    set_widget_value(node, controlled_node_info(), "label", "z")
    saved = CONTROLLED_SAVED[frontend]
    assert node["widgets_values"] == [*saved[:8], 0.125, *saved[9:-2], "z", saved[-1]]


def test_a_primitive_node_gives_its_value_not_a_link():
    """A PrimitiveNode is the frontend's alone: its value is saved in the widget it feeds, and the
    prompt holds that value. As a link it would point at a node the prompt lacks, and the server
    would refuse the whole prompt."""
    primitive = {"id": 6, "type": "PrimitiveNode", "inputs": [],
                 "outputs": [{"name": "FLOAT", "type": "FLOAT", "links": [13]}],
                 "widgets_values": [2.5, "fixed"]}  # fmt: skip
    ui = workflow(factor=2.5, extra=[primitive])
    ui["nodes"][1]["inputs"].append(
        {"name": "factor", "type": "FLOAT", "link": 13, "widget": {"name": "factor"}}
    )
    ui["links"].append([13, 6, 0, 2, 1, "FLOAT"])
    prompt = ui_to_api(ui, object_info_from_mappings(MAPPINGS))
    assert sorted(prompt) == ["1", "2", "3"]
    assert prompt["2"]["inputs"] == {"mode": "double", "factor": 2.5, "values": ["1", 0]}


def test_a_primitive_set_keeps_its_named_value():
    """A PrimitiveNode saved by frontend 1.58 holds its value under "value" in
    ``widgets_values_named`` too, which that frontend's restore-by-name setting loads: setting
    the widget it feeds updates both copies."""
    primitive = {"id": 6, "type": "PrimitiveNode", "inputs": [],
                 "outputs": [{"name": "FLOAT", "type": "FLOAT", "links": [13]}],
                 "widgets_values": [2.5, "fixed"],
                 "widgets_values_named": {"value": 2.5, "control_after_generate": "fixed"}}  # fmt: skip
    ui = workflow(factor=2.5, extra=[primitive])
    ui["nodes"][1]["inputs"].append(
        {"name": "factor", "type": "FLOAT", "link": 13, "widget": {"name": "factor"}}
    )
    ui["links"].append([13, 6, 0, 2, 1, "FLOAT"])
    edited = with_widget_values(ui, object_info_from_mappings(MAPPINGS), {("2", "factor"): 4.0})
    saved = edited["nodes"][-1]
    assert saved["widgets_values"] == [4.0, "fixed"]
    assert saved["widgets_values_named"] == {"value": 4.0, "control_after_generate": "fixed"}


def test_a_node_saved_with_fewer_widget_values_converts_and_takes_new_ones():
    """Nodes saved before a widget was added carry fewer widgets_values: conversion leaves the new
    widget out (the server applies its default) and setting it writes it where the frontend keeps
    it, instead of an IndexError."""
    info = object_info_from_mappings(MAPPINGS)
    ui = workflow()
    ui["nodes"][0]["widgets_values"] = [4]  # count only: no seed, no control value
    ui["nodes"][1]["widgets_values"] = ["negate"]  # mode only: no factor
    prompt = ui_to_api(ui, info)
    assert prompt["1"]["inputs"] == {"count": 4}
    assert prompt["2"]["inputs"] == {"mode": "negate", "values": ["1", 0]}
    edited = with_widget_values(ui, info, {("2", "factor"): 3.0, ("1", "seed"): 9})
    assert edited["nodes"][1]["widgets_values"] == ["negate", 3.0]
    assert edited["nodes"][0]["widgets_values"] == [4, 9]
    assert widget_table(edited, info)["2"] == ("Scale", {"mode": "negate", "factor": 3.0})


def test_a_bypassed_node_with_any_type_sockets_passes_its_input_through():
    """Generic nodes ("*" sockets: reroute-like utilities) pass their input on when bypassed, as
    ComfyUI matches "*" with any type, instead of dropping the link to the next node."""
    ui = workflow()
    ui["nodes"][1]["mode"] = 4
    ui["nodes"][1]["inputs"][0]["type"] = "*"
    prompt = ui_to_api(ui, object_info_from_mappings(MAPPINGS))
    assert prompt["3"]["inputs"]["values"] == ["1", 0]


class Tagged(Scale):
    """A node declaring control_after_generate on a STRING and a BOOLEAN, which get no control
    widget in the frontend (only INT, FLOAT and COMBO do), and on a FLOAT (converted only)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "values": ("TENSOR",),
                "label": ("STRING", {"default": "", "control_after_generate": True}),
                "flip": ("BOOLEAN", {"default": False, "control_after_generate": True}),
                "factor": ("FLOAT", {"default": 1.0, "control_after_generate": True}),
                "mode": (["double", "negate"],),
            }
        }


def test_a_string_or_boolean_declaring_a_control_has_no_control_value():
    """The frontend saves a control value after an INT, FLOAT or COMBO only: counting one after
    the STRING and the BOOLEAN shifted every later widget, and the prompt sent flip=1.5 and
    factor="negate" with no mode."""
    info = object_info_from_mappings({**MAPPINGS, "Tagged": Tagged})["Tagged"]
    node = {"widgets_values": ["take", True, 1.5, "fixed", "negate"]}  # as frontend 1.58 saves
    assert widget_values(node, info) == {
        "label": "take",
        "flip": True,
        "factor": 1.5,
        "mode": "negate",
    }
    set_widget_value(node, info, "mode", "double")
    set_widget_value(node, info, "flip", False)
    assert node["widgets_values"] == ["take", False, 1.5, "fixed", "double"]


class Choose(Scale):
    """A multi-select COMBO: its value is a list of the chosen options (converted only)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"values": ("TENSOR",), "modes": (["a", "b", "c"], {"multi_select": True})}
        }


def test_a_widget_whose_value_is_a_two_item_list_is_listed_not_taken_for_a_link():
    """A link is [node id, output slot]; a multi-select widget holding two choices is a list of
    two strings too. Taken for a link, it vanished from the widgets the queue command lists and
    sets."""
    info = object_info_from_mappings({**MAPPINGS, "Choose": Choose})
    choose = {"id": 5, "type": "Choose", "widgets_values": [["a", "c"]],
              "inputs": [{"name": "values", "type": "TENSOR", "link": 12}]}  # fmt: skip
    ui = workflow(extra=[choose])
    ui["links"].append([12, 1, 0, 5, 0, "TENSOR"])
    assert widget_table(ui, info)["5"] == ("Choose", {"modes": ["a", "c"]})


def test_a_list_value_goes_to_the_server_wrapped_as_the_frontend_wraps_it():
    """The server takes a bare list for a link ([node id, slot]): the two choices of a
    multi-select were refused as a link to node "a", three as a malformed link. The frontend
    sends {"__value__": [...]}, which the server unwraps; so does the prompt here, and an API
    prompt's wrapped value is listed and set as the list itself."""
    info = object_info_from_mappings({**MAPPINGS, "Choose": Choose})
    choose = {"id": 5, "type": "Choose", "widgets_values": [["a", "c"]],
              "inputs": [{"name": "values", "type": "TENSOR", "link": 12}]}  # fmt: skip
    ui = workflow(extra=[choose])
    ui["links"].append([12, 1, 0, 5, 0, "TENSOR"])
    prompt = ui_to_api(ui, info)
    assert prompt["5"]["inputs"] == {"modes": {"__value__": ["a", "c"]}, "values": ["1", 0]}
    assert widget_table(prompt, None)["5"] == ("Choose", {"modes": ["a", "c"]})
    edited = with_widget_values(prompt, None, {("5", "modes"): ["b"], ("1", "count"): 2})
    assert edited["5"]["inputs"]["modes"] == {"__value__": ["b"]}
    assert edited["1"]["inputs"]["count"] == 2
    edited = with_widget_values(ui, info, {("5", "modes"): ["a", "b", "c"]})
    assert ui_to_api(edited, info)["5"]["inputs"]["modes"] == {"__value__": ["a", "b", "c"]}


def test_a_bypassed_node_feeding_an_any_type_input_passes_its_input_through():
    """The frontend matches "*" on either side of a bypassed node: an input of any type behind
    it (a generic utility node) takes what feeds the bypassed node's first input, instead of
    losing the link and running without it."""
    ui = workflow()
    ui["nodes"][1]["mode"] = 4
    ui["nodes"][2]["inputs"][0]["type"] = "*"
    prompt = ui_to_api(ui, object_info_from_mappings(MAPPINGS))
    assert prompt["3"]["inputs"] == {"values": ["1", 0]}


class Blend(Scale):
    """Two inputs of one type, as a blend or a switch has (bypassed only, never run)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("TENSOR",), "other": ("TENSOR",)}}


def test_a_bypassed_node_with_two_matching_inputs_passes_the_first_one_through():
    """The frontend passes a bypassed node's output on from the input at the same slot, the
    first one here (ExecutableNodeDTO._getBypassSlotIndex): taking the other matching input
    rendered from the wrong source."""
    second = {"id": 5, "type": "MakeNumbers", "inputs": [], "widgets_values": [2, 9, "fixed"]}
    ui = workflow(extra=[second])
    ui["nodes"][1].update(type="Blend", mode=4, widgets_values=[])
    ui["nodes"][1]["inputs"].append({"name": "other", "type": "TENSOR", "link": 12})
    ui["links"].append([12, 5, 0, 2, 1, "TENSOR"])
    prompt = ui_to_api(ui, object_info_from_mappings({**MAPPINGS, "Blend": Blend}))
    assert sorted(prompt) == ["1", "3", "5"]
    assert prompt["3"]["inputs"] == {"values": ["1", 0]}


BYPASSED = 4


def _probe_inputs(workflow: dict, node_id: int) -> dict:
    return ui_to_api(workflow, PROBE_NODES)[str(node_id)]["inputs"]


def test_a_bypassed_nodes_input_at_the_output_slot_comes_first_even_without_a_link():
    """The frontend passes output 0 of a bypassed node on from input 0 where that one fits, and
    drops the link when input 0 has none: taking input b, the other IMAGE, rendered from a
    source the frontend never sends (graphToPrompt in the real frontend agrees, see
    test_comfyui_server's random graphs)."""
    nodes = {1: ("ProbeSource", 0), 2: ("ProbeMix", BYPASSED), 3: ("ProbeAny", 0)}
    workflow = probe_workflow(nodes, [(1, 1, 2, 1), (2, 0, 3, 1)])  # b fed; out 0 -> y
    assert _probe_inputs(workflow, 3) == {}
    workflow = probe_workflow(nodes, [(1, 0, 2, 0), (1, 1, 2, 1), (2, 1, 3, 1)])  # out 1 -> y
    assert _probe_inputs(workflow, 3) == {"y": ["1", 1]}


def test_a_bypassed_node_takes_the_targets_exact_type_before_the_first_that_fits():
    """Output 3 (MASK) of a bypassed ProbeWide has no input at its slot: the frontend takes v,
    the MASK input, before w, the "*" input that fits first."""
    nodes = {1: ("ProbeSource", 0), 2: ("ProbeWide", BYPASSED), 3: ("ProbeMix", 0)}
    workflow = probe_workflow(nodes, [(1, 0, 2, 0), (1, 2, 2, 2), (2, 3, 3, 2)])
    assert _probe_inputs(workflow, 3) == {"m": ["1", 2]}


def test_bypassed_nodes_in_a_row_are_each_asked_for_the_type_of_the_input_passed_on():
    """Behind a "*" input the first bypassed node passes on its input at the output's slot (m,
    a MASK); the frontend then asks the next bypassed node for a MASK, so it passes on v, not
    w, as it would for "*"."""
    nodes = {1: ("ProbeSource", 0), 2: ("ProbeWide", BYPASSED), 3: ("ProbeMix", BYPASSED)}
    nodes |= {4: ("ProbeAny", 0)}
    links = [(1, 0, 2, 0), (1, 2, 2, 2), (2, 3, 3, 2), (3, 2, 4, 0)]
    assert _probe_inputs(probe_workflow(nodes, links), 4) == {"x": ["1", 2]}


def test_behind_a_subgraph_input_a_bypassed_node_is_asked_for_that_inputs_type():
    """Leaving a subgraph through its input, the frontend resolves on from the subgraph node's
    input (ExecutableNodeDTO.resolveInput drops the inner type there): a bypassed ProbeWide
    behind a "*" subgraph input passes on its input at the output's slot, or the first (w,
    unlinked: the link is dropped), not u, which the inner IMAGE,MASK input would have taken."""
    subgraph = "0b5e1b3c-7a4e-4f7e-9c1d-2a6f0e8d4c21"
    workflow = probe_workflow({1: ("ProbeSource", 0), 4: ("ProbeWide", BYPASSED)}, [(1, 0, 4, 1)])
    workflow["nodes"][1]["outputs"][3]["links"].append(2)
    workflow["links"].append([2, 4, 3, 10, 0, "MASK"])
    workflow["nodes"].append({"id": 10, "type": subgraph, "mode": 0, "outputs": [],
                              "inputs": [{"name": "x", "type": "*", "link": 2}]})  # fmt: skip
    inner = probe_workflow({7: ("ProbeWide", 0)}, [])["nodes"][0]
    inner["inputs"][1]["link"] = 6
    workflow["definitions"] = {"subgraphs": [{
        "id": subgraph, "name": "Inner", "nodes": [inner], "outputs": [], "widgets": [],
        "inputs": [{"id": "x", "name": "x", "type": "*", "linkIds": [6]}],
        "links": [{"id": 6, "origin_id": -10, "origin_slot": 0, "target_id": 7,
                   "target_slot": 1, "type": "IMAGE,MASK"}],
    }]}  # fmt: skip
    assert ui_to_api(workflow, PROBE_NODES)["10:7"]["inputs"] == {}
    workflow["definitions"]["subgraphs"][0]["inputs"][0]["type"] = "IMAGE,MASK"
    assert ui_to_api(workflow, PROBE_NODES)["10:7"]["inputs"] == {"u": ["1", 0]}


class Pick(Scale):
    """A node declaring its choices the newer way, ("COMBO", {"options": [...]}), as ComfyUI's
    io schema nodes do (validated only, never run)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("TENSOR",), "mode": ("COMBO", {"options": ["a", "b"]})}}


def test_a_combo_declared_with_options_is_checked_against_them():
    """A COMBO's choices come from its "options" when the type is the word COMBO rather than the
    list itself: a value outside them is reported, one inside passes."""
    info = object_info_from_mappings({**MAPPINGS, "Pick": Pick})
    pick = {"id": 5, "type": "Pick", "inputs": [{"name": "values", "type": "TENSOR", "link": 12}]}
    for mode, errors in (("b", []), ("c", ["node 5 (Pick): mode='c' is not one of ['a', 'b']"])):
        ui = workflow(extra=[{**pick, "widgets_values": [mode]}])
        ui["links"].append([12, 1, 0, 5, 0, "TENSOR"])
        assert validate_workflow(ui, info) == errors


def test_named_widget_values_convert_and_the_api_table_lists_no_links():
    """Some packs save widgets_values as a dict by name: those values convert as they are, and
    setting one writes it under its name. In an API prompt an input holding a link is not a
    widget, so the table leaves it out (it would offer "values" as a value to set)."""
    info = object_info_from_mappings(MAPPINGS)
    ui = workflow()
    ui["nodes"][1]["widgets_values"] = {"factor": 0.5, "mode": "negate"}
    prompt = ui_to_api(ui, info)
    assert prompt["2"]["inputs"] == {"factor": 0.5, "mode": "negate", "values": ["1", 0]}
    edited = with_widget_values(ui, info, {("2", "factor"): 2.0})
    assert edited["nodes"][1]["widgets_values"] == {"factor": 2.0, "mode": "negate"}
    assert widget_table(prompt, None) == {
        "1": ("MakeNumbers", {"count": 4, "seed": 2}),
        "2": ("Scale", {"factor": 0.5, "mode": "negate"}),
        "3": ("Total", {}),
    }


def test_a_link_through_a_reroute_chain_comes_from_the_node_before_it():
    """Reroutes are the frontend's alone: a link through two of them names the node that feeds
    the first, else the prompt points at a node it lacks and the server refuses it."""
    reroutes = [
        {"id": 7, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 20}]},
        {"id": 8, "type": "Reroute", "inputs": [{"name": "", "type": "*", "link": 21}]},
    ]
    ui = workflow(extra=reroutes)
    ui["nodes"][1]["inputs"][0]["link"] = 22
    ui["links"] = [[20, 1, 0, 7, 0, "*"], [21, 7, 0, 8, 0, "*"], [22, 8, 0, 2, 0, "TENSOR"]]
    ui["links"].append([11, 2, 0, 3, 0, "TENSOR"])
    prompt = ui_to_api(ui, object_info_from_mappings(MAPPINGS))
    assert sorted(prompt) == ["1", "2", "3"]
    assert prompt["2"]["inputs"]["values"] == ["1", 0]


def test_executor_runs_three_nodes():
    prompt = ui_to_api(workflow(count=4, factor=1.5), object_info_from_mappings(MAPPINGS))
    outputs = run_api_prompt(prompt, MAPPINGS)
    # arange(4) + seed 2 = [2, 3, 4, 5]; doubled and * 1.5 = [6, 9, 12, 15]
    assert torch.equal(outputs["1"]["result"][0], torch.tensor([2.0, 3.0, 4.0, 5.0]))
    assert torch.equal(outputs["2"]["result"][0], torch.tensor([6.0, 9.0, 12.0, 15.0]))
    assert outputs["3"]["result"] == (42.0,)
    assert outputs["3"]["ui"] == {"total": [42.0]}


def test_core_shims_read_assets_like_the_host(tmp_path):
    from PIL import Image

    pixels = torch.zeros(2, 3, 4, dtype=torch.uint8)
    pixels[..., 0] = 255  # red everywhere
    pixels[..., 3] = 255  # opaque
    pixels[0, 0, 3] = 0  # one transparent pixel
    Image.fromarray(pixels.numpy(), "RGBA").save(tmp_path / "a.png")
    shims = core_shims(tmp_path)
    image, mask = shims["LoadImage"]().load_image("a.png")
    assert image.shape == (1, 2, 3, 3) and float(image[..., 0].min()) == 1.0
    assert mask.shape == (1, 2, 3) and float(mask.sum()) == 1.0 and float(mask[0, 0, 0]) == 1.0
    (red,) = shims["LoadImageMask"]().load_image("a.png", "red")
    assert torch.equal(red, torch.ones(1, 2, 3))
    assert shims["LoadImage"].INPUT_TYPES()["required"]["image"][0] == ["a.png"]
