"""ComfyUI's two workflow formats, read and edited without the host.

Artists share the UI format (``nodes`` + ``links``, widget values as a positional
``widgets_values`` list); the server runs the API format (``{id: {"class_type", "inputs"}}``),
which the frontend derives. Conversion needs each node's input order, taken from the server's
``GET /object_info`` (or built from node classes), so any pack's nodes convert as the frontend
converts them. Semantics follow ComfyUI 0.3.64: the frontend's graphToPrompt (widget values in
input order, a control_after_generate value after seed widgets, links as [source_id, slot]) and
comfy_execution/validation.py for link types.
"""

from __future__ import annotations

import copy

from .errors import InputError

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
MUTED, BYPASSED = 2, 4


def is_api_prompt(workflow: dict) -> bool:
    """True for the API format: every value a node entry with a ``class_type``."""
    return (
        "nodes" not in workflow
        and bool(workflow)
        and all(isinstance(node, dict) and "class_type" in node for node in workflow.values())
    )


def node_inputs(node_info: dict) -> list[tuple[str, object, dict]]:
    """(name, type, options) for required then optional inputs, in input_order."""
    result = []
    for part in ("required", "optional"):
        spec = node_info["input"].get(part, {})
        for name in node_info.get("input_order", {}).get(part, list(spec)):
            entry = spec[name]
            result.append((name, entry[0], entry[1] if len(entry) > 1 else {}))
    return result


def type_name(kind) -> str:
    return "COMBO" if isinstance(kind, list) else str(kind)


def choices(kind, options: dict) -> list | None:
    if isinstance(kind, list):
        return kind
    if kind == "COMBO":
        return options.get("options")
    return None


def is_widget(kind, options: dict) -> bool:
    return type_name(kind) in WIDGET_TYPES and not options.get("forceInput", False)


def has_control(name: str, kind, options: dict) -> bool:
    """Whether the frontend stores a control_after_generate value right after this widget."""
    return type_name(kind) == "INT" and (
        name in SEED_NAMES or bool(options.get("control_after_generate"))
    )


def _widget_positions(node_info: dict) -> dict[str, int]:
    """Where each widget input sits in a UI node's ``widgets_values``."""
    positions, position = {}, 0
    for name, kind, options in node_inputs(node_info):
        if not is_widget(kind, options):
            continue
        positions[name] = position
        position += 2 if has_control(name, kind, options) else 1
    return positions


def widget_values(node: dict, node_info: dict) -> dict:
    """Map a UI node's positional widgets_values to input names (the seed control value skipped)."""
    raw = node.get("widgets_values") or []
    if isinstance(raw, dict):  # some packs save named widget values
        return dict(raw)
    return {
        name: raw[position]
        for name, position in _widget_positions(node_info).items()
        if position < len(raw)
    }


def set_widget_value(node: dict, node_info: dict, name: str, value) -> None:
    """Write one widget of a UI node in place, where the frontend keeps it."""
    raw = node.get("widgets_values")
    if isinstance(raw, dict):
        raw[name] = value
        return
    position = _widget_positions(node_info)[name]
    raw = list(raw or [])
    raw.extend([None] * (position + 1 - len(raw)))
    raw[position] = value
    node["widgets_values"] = raw


def widget_table(workflow: dict, object_info: dict | None) -> dict[str, tuple[str, dict]]:
    """node id -> (title, {input: value}) for every widget value a workflow of either format
    holds (API inputs that are links are not widgets); UI workflows need ``object_info``."""
    if is_api_prompt(workflow):
        return {
            str(node_id): (
                node.get("_meta", {}).get("title", node["class_type"]),
                {k: v for k, v in node["inputs"].items() if not is_link(v)},
            )
            for node_id, node in workflow.items()
        }
    table = {}
    for node in workflow["nodes"]:
        if node["type"] in VIRTUAL_NODES or node["type"] not in object_info:
            continue
        info = object_info[node["type"]]
        title = node.get("title", info["display_name"])
        table[str(node["id"])] = (title, widget_values(node, info))
    return table


def with_widget_values(
    workflow: dict, object_info: dict | None, values: dict[tuple[str, str], object]
) -> dict:
    """A copy of ``workflow`` (either format) with the widget ``(node id, input)`` -> value set."""
    edited = copy.deepcopy(workflow)
    if is_api_prompt(edited):
        for (node_id, name), value in values.items():
            edited[node_id]["inputs"][name] = value
        return edited
    nodes = {str(node["id"]): node for node in edited["nodes"]}
    for (node_id, name), value in values.items():
        node = nodes[node_id]
        set_widget_value(node, object_info[node["type"]], name, value)
    return edited


def is_link(value) -> bool:
    """An API input value that is a link: [source node id, output slot]."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def types_match(received: str, wanted: str) -> bool:
    """ComfyUI's validate_node_input (non-strict): '*' matches anything, comma unions overlap."""
    if received == wanted:
        return True
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in wanted.split(",")}
    if "*" in got or "*" in want:
        return True
    return bool(got & want)


def _resolve_source(link_id: int, links: dict, nodes: dict, wanted_type: str) -> list | None:
    """[source_id, slot] behind a link, following Reroutes and bypassed nodes; None if dropped."""
    while link_id is not None:
        _, source, slot, *_ = links[link_id]
        node = nodes[source]
        if node["type"] == "Reroute":
            link_id = node["inputs"][0].get("link")
            continue
        if node.get("mode") == MUTED or node["type"] == "PrimitiveNode":
            return None
        if node.get("mode") == BYPASSED:
            through = [
                i.get("link")
                for i in node.get("inputs", [])
                if i.get("link") is not None and types_match(i["type"], wanted_type)
            ]
            link_id = through[0] if through else None
            continue
        return [str(source), slot]
    return None


def ui_to_api(ui_workflow: dict, object_info: dict) -> dict:
    """The API prompt graphToPrompt produces: {id: {"class_type", "inputs", "_meta"}}."""
    links = {link[0]: link for link in ui_workflow["links"]}
    nodes = {node["id"]: node for node in ui_workflow["nodes"]}
    prompt = {}
    for node in ui_workflow["nodes"]:
        if node["type"] in VIRTUAL_NODES or node.get("mode") in (MUTED, BYPASSED):
            continue
        if node["type"] not in object_info:
            raise InputError(
                "workflow",
                f"node {node['id']} is a {node['type']}, which the server does not know",
                "install the node pack that provides it, or remove the node",
            )
        info = object_info[node["type"]]
        inputs = widget_values(node, info)
        for socket in node.get("inputs", []):
            if socket.get("link") is None:
                continue
            source = _resolve_source(socket["link"], links, nodes, socket["type"])
            if source is not None:
                inputs[socket["name"]] = source
        prompt[str(node["id"])] = {
            "inputs": inputs,
            "class_type": node["type"],
            "_meta": {"title": node.get("title", info["display_name"])},
        }
    return prompt
