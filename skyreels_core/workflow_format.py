"""ComfyUI's two workflow formats, read and edited without the host.

Artists share the UI format (``nodes`` + ``links``, widget values as a positional
``widgets_values`` list); the server runs the API format (``{id: {"class_type", "inputs"}}``),
which the frontend derives. Conversion needs each node's input order, taken from the server's
``GET /object_info`` (or built from node classes), so any pack's nodes convert as the frontend
converts them. Semantics follow ComfyUI 0.3.64: the frontend's graphToPrompt (widget values in
input order, control_after_generate values after the widgets that have them, links as
[source_id, slot]) and comfy_execution/validation.py for link types. Subgraph nodes (their
subgraphs saved under ``definitions.subgraphs``) expand into the nodes inside them as the
frontend's ExecutableNodeDTO expands them, an inner node's id being "<subgraph node id>:<inner
id>".
"""

from __future__ import annotations

import copy
import re

from .errors import InputError

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}
VIRTUAL_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
MUTED, BYPASSED = 2, 4
SUBGRAPH_INPUT, SUBGRAPH_OUTPUT = -10, -20  # a subgraph's input and output nodes' ids
SUBGRAPH_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
PROXY_PREFIX = re.compile(r"^\s*(\d+)\s*:\s*(.+)$")  # "9: seed": node 9's widget seed


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


def is_widget(kind, options: dict) -> bool:
    return type_name(kind) in WIDGET_TYPES and not options.get("forceInput", False)


def control_values(name: str, kind, options: dict, float_controls: bool = True) -> int:
    """How many values the frontend saves right after this widget: its control_after_generate
    mode, and after a COMBO's the filter list it adds too. An INT named like a seed has a control
    unless it declares control_after_generate false; frontend 1.27 gave a FLOAT none
    (``float_controls`` off reads a workflow it saved)."""
    wanted = options.get("control_after_generate")
    kind = type_name(kind)
    if kind == "INT":
        return int(bool(name in SEED_NAMES if wanted is None else wanted))
    if kind == "COMBO" and wanted:
        return 2
    return int(kind == "FLOAT" and float_controls and bool(wanted))


def _widget_positions(node_info: dict, saved: int | None = None) -> dict[str, int]:
    """Where each widget input sits in a UI node's ``widgets_values`` of ``saved`` values: as
    the frontend saves it, or as 1.27 did where only that layout has that many values."""
    layouts = []
    for float_controls in (True, False):
        positions, position = {}, 0
        for name, kind, options in node_inputs(node_info):
            if is_widget(kind, options):
                positions[name] = position
                position += 1 + control_values(name, kind, options, float_controls)
        layouts.append((positions, position))
    (current, current_size), (legacy, legacy_size) = layouts
    return legacy if saved == legacy_size != current_size else current


def widget_values(node: dict, node_info: dict) -> dict:
    """Map a UI node's positional widgets_values to input names (control values skipped)."""
    raw = node.get("widgets_values") or []
    if isinstance(raw, dict):  # some packs save named widget values
        return dict(raw)
    return {
        name: raw[position]
        for name, position in _widget_positions(node_info, len(raw)).items()
        if position < len(raw)
    }


def set_widget_value(node: dict, node_info: dict, name: str, value) -> None:
    """Write one widget of a UI node in place, where the frontend keeps it."""
    raw = node.get("widgets_values")
    position = None
    if not isinstance(raw, dict):
        position = _widget_positions(node_info, len(raw or []) or None)[name]
    _store_value(node, position, name, value)


def _store_value(node: dict, position: int | str | None, name: str, value) -> None:
    """Write a value at ``position`` of a node's ``widgets_values`` (under ``name`` where a pack
    saved them by name) and under ``name`` in the ``widgets_values_named`` that frontend 1.58
    saves beside them: its "Restore widget values by name" setting loads those, so a stale copy
    there would reopen the workflow with the old value."""
    raw = node.get("widgets_values")
    if isinstance(raw, dict):
        raw[name] = value
    else:
        raw = list(raw or [])
        raw.extend([None] * (position + 1 - len(raw)))
        raw[position] = value
        node["widgets_values"] = raw
    named = node.get("widgets_values_named")
    if isinstance(named, dict):
        named[name] = value


def widget_table(workflow: dict, object_info: dict | None) -> dict[str, tuple[str, dict]]:
    """node id -> (title, {input: value}) for every widget value a workflow of either format
    holds; UI workflows need ``object_info``. Inputs that are links are not widgets: a widget a
    node feeds (the core Int node wired into a seed) keeps a value the render never reads. The
    nodes inside a UI workflow's subgraph nodes are listed by the ids the API prompt gives them
    ("5:3": node 3 inside subgraph node 5), with the values the prompt takes (a widget promoted
    onto the subgraph node takes that node's value)."""
    if is_api_prompt(workflow):
        return {
            str(node_id): (
                node.get("_meta", {}).get("title", node["class_type"]),
                {k: plain_value(v) for k, v in node["inputs"].items() if not is_link(v)},
            )
            for node_id, node in workflow.items()
        }
    prompt = ui_to_api(workflow, object_info)
    table = {}
    for node in expand_subgraphs(workflow, object_info)["nodes"]:
        if node["type"] in VIRTUAL_NODES or node["type"] not in object_info:
            continue
        info = object_info[node["type"]]
        title = node.get("title", info["display_name"])
        inputs = prompt.get(str(node["id"]), {}).get("inputs", {})
        values = widget_values(node, info)
        table[str(node["id"])] = (
            title,
            {name: value for name, value in values.items() if not is_link(inputs.get(name))},
        )
    return table


def with_widget_values(
    workflow: dict, object_info: dict | None, values: dict[tuple[str, str], object]
) -> dict:
    """A copy of ``workflow`` (either format) with the widget ``(node id, input)`` -> value set.

    A widget inside a subgraph (node id "5:3", as :func:`widget_table` lists it) is written where
    the frontend keeps its value: on the subgraph node when the widget is promoted to it (and in
    the definition too where no other subgraph node's value changes so: frontend 1.42 sends that
    one), else in the subgraph's definition. One place can hold the value of several widgets (a
    definition used by two subgraph nodes, a promoted widget feeding two nodes); setting only
    some of them, or them to different values, cannot be saved and is refused, naming the
    others."""
    edited = copy.deepcopy(workflow)
    if is_api_prompt(edited):
        for (node_id, name), value in values.items():
            edited[node_id]["inputs"][name] = api_value(value)
        return edited
    _set_primitives_feeding(edited, values)
    if not _has_subgraph_nodes(edited):
        nodes = {str(node["id"]): node for node in edited["nodes"]}
        for (node_id, name), value in values.items():
            node = nodes[node_id]
            set_widget_value(node, object_info[node["type"]], name, value)
        return edited
    flat = _Flattener(edited, object_info)
    flat.expand()
    wanted: dict[tuple, dict[tuple[str, str], object]] = {}
    for (node_id, name), value in values.items():
        key = flat.sources.get((str(node_id), name))
        if key is None:
            raise InputError(
                f"widget {node_id}.{name}",
                "the workflow has no such widget",
                "name one of its widgets as NODE.INPUT (a node inside a subgraph as 5:3)",
            )
        wanted.setdefault(key, {})[(str(node_id), name)] = value
    for key, chosen in wanted.items():
        value = next(iter(chosen.values()))
        sharing = [widget for widget in flat.users[key] if widget not in chosen]
        if sharing or any(other != value for other in chosen.values()):
            flat.refuse_shared(key, list(chosen), sharing)
        flat.write(key, value)
    return edited


def _set_primitives_feeding(workflow: dict, values: dict[tuple[str, str], object]) -> None:
    """A widget a legacy PrimitiveNode (of the root graph) feeds takes that node's value when the
    frontend opens the workflow, and so does every other widget it feeds: the primitive is set
    too, or the workflow saved with the render would show (and queue again) the old value; and
    setting only some of its widgets, or them to different values, cannot be saved: refused."""
    nodes = {str(node["id"]): node for node in workflow["nodes"]}
    fed: dict[str, list[tuple[str, str]]] = {}  # primitive id -> the widgets it feeds
    for _, origin, _, target, slot, _ in map(_link_entry, filter(None, workflow["links"])):
        source, sockets = nodes.get(str(origin)), nodes.get(str(target), {}).get("inputs") or []
        if source is not None and source["type"] == "PrimitiveNode" and slot < len(sockets):
            fed.setdefault(str(origin), []).append((str(target), sockets[slot]["name"]))
    for primitive_id, widgets in fed.items():
        chosen = {widget: values[widget] for widget in widgets if widget in values}
        if not chosen:
            continue
        value = next(iter(chosen.values()))
        others = [widget for widget in widgets if widget not in chosen]
        if others or any(other != value for other in chosen.values()):
            named = ", ".join(f"{node}.{name}" for node, name in widgets)
            (node_id, name), *_ = chosen
            raise InputError(
                f"widget {node_id}.{name}",
                f"it takes the value of PrimitiveNode {primitive_id}, which feeds {named}",
                f"set {named} to the same value",
            )
        _store_value(nodes[primitive_id], 0, "value", value)  # the frontend names it "value"


def api_value(value):
    """A widget value as an API prompt carries it: a list wrapped as ``{"__value__": list}``, as
    the frontend's graphToPrompt wraps it, since the server takes a bare list for a link (a
    multi-select's two choices for node "a"'s output, three for a malformed link)."""
    return {"__value__": value} if isinstance(value, list) else value


def plain_value(value):
    """An API prompt's widget value unwrapped, as the server unwraps it."""
    return value["__value__"] if isinstance(value, dict) and "__value__" in value else value


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
    """[source_id, slot] behind a link, following Reroutes and bypassed nodes; None if dropped.
    As the frontend's ExecutableNodeDTO, a bypassed node is asked for the type of the input it
    passes on, not the first target's."""
    while link_id is not None:
        _, source, slot, *_ = links[link_id]
        node = nodes[source]
        if node["type"] == "Reroute":
            link_id = node["inputs"][0].get("link")
            continue
        if node.get("mode") == MUTED or node["type"] == "PrimitiveNode":
            return None
        if node.get("mode") == BYPASSED:
            index = _bypass_input(node, slot, wanted_type)
            if index is None:
                return None
            link_id, wanted_type = node["inputs"][index].get("link"), node["inputs"][index]["type"]
            continue
        return [str(source), slot]
    return None


def _bypass_input(node: dict, slot: int, wanted: str) -> int | None:
    """The input a bypassed node passes its output ``slot`` on from, as the frontend picks it
    (ExecutableNodeDTO._getBypassSlotIndex): for a target of any type the one at the same slot
    (else the first); else the one at the same slot where it connects to both that output and
    the target, else the first of exactly the target's type, else the first that connects to
    both. None where none does; an input picked that has no link drops the link too."""
    inputs = node.get("inputs") or []
    if not inputs:
        return None
    if wanted in ("*", ""):
        return slot if slot < len(inputs) else 0
    outputs = node.get("outputs") or []
    made = outputs[slot].get("type", "*") if slot < len(outputs) else "*"

    def fits(index: int) -> bool:
        kind = inputs[index].get("type", "*")
        return _connects(kind, made) and _connects(kind, wanted)

    if slot < len(inputs) and fits(slot):
        return slot
    exact = next((i for i, socket in enumerate(inputs) if socket.get("type") == wanted), None)
    return exact if exact is not None else next((i for i in range(len(inputs)) if fits(i)), None)


def _connects(first: str, second: str) -> bool:
    """LiteGraph's isValidConnection: "*" or "" connects to anything, otherwise the types are
    equal ignoring case, or a member of one comma list is of the other."""
    if first in ("", "*") or second in ("", "*") or first == second:
        return True
    first, second = str(first).lower(), str(second).lower()
    if "," not in first and "," not in second:
        return first == second
    return any(_connects(a, b) for a in first.split(",") for b in second.split(","))


def _link_entry(link) -> list:
    """A link as [id, origin id, origin slot, target id, target slot, type]: the root graph saves
    arrays, subgraph definitions (and the version 1 schema) objects."""
    if isinstance(link, dict):
        return [
            link["id"],
            link["origin_id"],
            link["origin_slot"],
            link["target_id"],
            link["target_slot"],
            link.get("type", "*"),
        ]
    return list(link)


def subgraph_definitions(ui_workflow: dict) -> dict[str, dict]:
    """Subgraph id -> definition: the frontend saves a subgraph node with the subgraph's id (a
    UUID) as its ``type`` and the subgraph under ``definitions.subgraphs``."""
    definitions = ui_workflow.get("definitions") or {}
    return {sub["id"]: sub for sub in definitions.get("subgraphs") or [] if "id" in sub}


def _has_subgraph_nodes(ui_workflow: dict) -> bool:
    subgraphs = subgraph_definitions(ui_workflow)
    return any(node.get("type") in subgraphs for node in ui_workflow["nodes"])


class _Scope:
    """One graph being expanded: the root, or one subgraph node's copy of its definition."""

    def __init__(self, path, nodes, links, instance=None, parent=None, definition=None):
        self.path = path  # subgraph node ids from the root down to this graph
        self.nodes = {node["id"]: node for node in nodes}
        self.links = {}
        for link in links:
            if link is not None:
                entry = _link_entry(link)
                self.links[entry[0]] = entry
        self.instance, self.parent, self.definition = instance, parent, definition
        self.chain = (parent.chain if parent else ()) + ((definition["id"],) if definition else ())
        # Promoted widget values: subgraph input name -> (value, storage key), and those of
        # inner nodes' widgets shown on the subgraph node: inner id -> {widget: (value, key)}.
        self.host: dict[str, tuple] = {}
        self.proxies: dict[str, dict[str, tuple]] = {}

    def flat_id(self, node_id):
        """The frontend's execution id: the subgraph node path, then the node's own id."""
        return node_id if not self.path else ":".join(map(str, (*self.path, node_id)))

    def name(self) -> str:
        return repr(self.definition.get("name") or self.definition["id"])


class _Flattener:
    """A UI workflow's subgraph nodes replaced by the nodes inside them, as the frontend's
    graphToPrompt (ExecutableNodeDTO) resolves them: inner nodes get the id "<subgraph node
    id>:<inner id>" (nested: "5:9:3"); an inner input fed by the subgraph's input node (-10)
    takes what feeds the subgraph node's matching input, or the value of the widget promoted
    onto the subgraph node when nothing does; a link from a subgraph node's output comes from
    what feeds the matching slot of the subgraph's output node (-20). Inner nodes muted or
    bypassed are dropped or bypassed as at the top level. A muted or bypassed subgraph node is
    kept as one node, dropped or bypassed as any node is, and its inner nodes do not run (the
    frontend since its PR #8494, January 2026; before, bypassing it bypassed them all).
    ``sources`` records where each widget's value is saved, for :func:`with_widget_values`."""

    def __init__(self, ui_workflow: dict, object_info: dict) -> None:
        self.object_info = object_info
        self.subgraphs = subgraph_definitions(ui_workflow)
        self.root = _Scope((), ui_workflow["nodes"], ui_workflow["links"])
        self.nodes: list[dict] = []
        self.links: dict[int, list] = {}
        self.sources: dict[tuple[str, str], tuple] = {}  # (flat id, widget) -> storage key
        self.users: dict[tuple, list[tuple[str, str]]] = {}  # storage key -> its widgets
        # widget -> the keys of the values it could take, its node's own first, the one it takes
        # (promoted onto the outermost subgraph node) last; see write().
        self.chains: dict[tuple[str, str], tuple] = {}
        self._linked: set[tuple[str, str]] | None = None  # widgets the prompt links instead
        self.hidden: set[str] = set()  # definitions with copies in muted or bypassed nodes
        self.stores: dict[tuple, tuple] = {}  # storage key -> (kind, object, where, scope)
        self.boundary_types: dict[int, str] = {}  # flat link id -> type (see _origin)
        self._scopes: dict[tuple, _Scope] = {}
        self._promoted: dict[str, dict[int, int]] = {}

    # -- expansion ---------------------------------------------------------------------------

    def expand(self, scope: _Scope | None = None) -> None:
        scope = scope or self.root
        for node in scope.nodes.values():
            if self._is_instance(node) and node.get("mode") not in (MUTED, BYPASSED):
                self.expand(self._child(scope, node))
            else:
                if self._is_instance(node):
                    self._hide(node["type"])
                self._emit(scope, node)

    def _hide(self, definition_id: str) -> None:
        """Mark a definition, and those nested in it, as having copies left unexpanded."""
        if definition_id not in self.hidden:
            self.hidden.add(definition_id)
            for node in self.subgraphs[definition_id].get("nodes") or []:
                if self._is_instance(node):
                    self._hide(node["type"])

    def _is_instance(self, node: dict) -> bool:
        return node.get("type") in self.subgraphs

    def _emit(self, scope: _Scope, node: dict) -> None:
        flat = copy.deepcopy(node)
        flat["id"] = scope.flat_id(node["id"])
        proxies = scope.proxies.get(str(node["id"]), {})
        overrides = {name: (stored, ()) for name, stored in proxies.items()}
        for index, socket in enumerate(flat.get("inputs") or []):
            if socket.get("link") is None:
                continue
            link = self._link(scope, socket["link"], node)
            origin, promoted, crossed, passed = self._origin(scope, link[1], link[2])
            if promoted is not None:
                overrides[socket["name"]] = (promoted, passed)
            if origin is None:
                socket["link"] = None
                continue
            link_id = len(self.links) + 1
            self.links[link_id] = [link_id, *origin, flat["id"], index, link[5]]
            socket["link"] = link_id
            if crossed is not None:
                self.boundary_types[link_id] = crossed
        info = self.object_info.get(node["type"]) if node["type"] not in VIRTUAL_NODES else None
        if info is not None:
            for name in _widget_positions(info):
                widget = (str(flat["id"]), name)
                key = ("node", id(node), name)
                self.stores.setdefault(key, ("node", node, name, scope))
                chain: tuple = (key,)
                if name in overrides:
                    (value, key), passed = overrides[name]
                    set_widget_value(flat, info, name, value)
                    chain = (*chain, *passed, key)
                self.chains[widget] = chain
                self.sources[widget] = key
                self.users.setdefault(key, []).append(widget)
        self.nodes.append(flat)

    def _link(self, scope: _Scope, link_id, node: dict) -> list:
        link = scope.links.get(link_id)
        if link is None:
            where = f"subgraph {scope.name()}" if scope.definition else "the workflow"
            raise InputError(
                "workflow",
                f"node {scope.flat_id(node['id'])} ({node.get('title', node['type'])}) takes "
                f"link {link_id}, which {where} does not have",
                "open the workflow in ComfyUI, reconnect the input and save it again",
            )
        return link

    def _origin(self, scope: _Scope, origin_id, slot: int) -> tuple:
        """(flat source id, slot) behind a link's origin, crossing subgraph boundaries (None
        where nothing feeds it); the value of the widget promoted onto the subgraph node whose
        input the way ends at unconnected, which the frontend sends then (else None: behind a
        PrimitiveNode or a muted node the inner widget keeps its own value, as there); the
        type of the last subgraph node input crossed outwards (None if none was), which the
        frontend resolves a bypassed node behind it with, in place of the inner input's; and the
        storage keys of the values promoted onto the nested subgraph nodes crossed outwards,
        which the frontend passes over as their inputs are linked (see write())."""
        crossed, passed = None, []
        while True:
            if origin_id == SUBGRAPH_INPUT and scope.definition is not None:
                inputs = scope.definition.get("inputs") or []
                if not 0 <= slot < len(inputs):
                    raise InputError(
                        "workflow",
                        f"subgraph {scope.name()} links from its input {slot}, which it lacks",
                        "open the workflow in ComfyUI and save it again",
                    )
                name, crossed = inputs[slot]["name"], inputs[slot].get("type", "*")
                link_id = self._instance_input(scope, slot)
                if link_id is None:
                    return None, scope.host.get(name), crossed, tuple(passed)
                if name in scope.host:
                    passed.append(scope.host[name][1])
                parent = scope.parent
                link = self._link(parent, link_id, scope.instance)
                scope, origin_id, slot = parent, link[1], link[2]
                continue
            node = scope.nodes.get(origin_id)
            if node is None:
                where = f"subgraph {scope.name()}" if scope.definition else "the workflow"
                raise InputError(
                    "workflow",
                    f"a link in {where} comes from node {origin_id}, which is not there",
                    "open the workflow in ComfyUI and save it again",
                )
            if self._is_instance(node) and node.get("mode") not in (MUTED, BYPASSED):
                child = self._child(scope, node)
                inner = self._output_link(child, slot)
                if inner is None:  # nothing inside feeds that output: the input is dropped
                    return None, None, crossed, ()
                scope, origin_id, slot = child, inner[1], inner[2]
                continue
            return (scope.flat_id(origin_id), slot), None, crossed, ()

    def _instance_input(self, scope: _Scope, slot: int):
        """The link into the subgraph node's input for subgraph input ``slot``. The frontend
        drops unconnected widget inputs when saving and rebinds the saved ones by name
        (SubgraphNode._rebindInputSubgraphSlots); an input it cannot match is dropped."""
        name = scope.definition["inputs"][slot]["name"]
        saved = scope.instance.get("inputs") or []
        return next((s.get("link") for s in saved if s.get("name") == name), None)

    def _output_link(self, child: _Scope, slot: int) -> list | None:
        """The link inside a subgraph into its output node's ``slot``: the frontend follows
        only the output's saved ``linkIds`` (resolveSubgraphOutputLink)."""
        outputs = child.definition.get("outputs") or []
        if 0 <= slot < len(outputs):
            for link_id in outputs[slot].get("linkIds") or []:
                link = child.links.get(link_id)
                if link is not None and link[3] == SUBGRAPH_OUTPUT:
                    return link
        return None

    def _child(self, scope: _Scope, instance: dict) -> _Scope:
        """The scope of a subgraph node's copy of its definition, with its promoted values."""
        path = (*scope.path, instance["id"])
        if path in self._scopes:
            return self._scopes[path]
        definition = self.subgraphs[instance["type"]]
        if definition["id"] in scope.chain:
            raise InputError(
                "workflow",
                f"subgraph {definition.get('name') or definition['id']!r} contains itself "
                f"(through node {scope.flat_id(instance['id'])})",
                "open the workflow in ComfyUI, unpack the nested subgraph node and save it again",
            )
        nodes, links = definition.get("nodes") or [], definition.get("links") or []
        child = _Scope(path, nodes, links, instance, scope, definition)
        self._scopes[path] = child
        self._host_values(child)
        # What the enclosing subgraph node shows of this one wins over its own values.
        names = {entry["name"] for entry in definition.get("inputs") or []}
        for name, stored in scope.proxies.get(str(instance["id"]), {}).items():
            prefixed = PROXY_PREFIX.match(name)
            if name in names:
                child.host[name] = stored
            elif prefixed:
                child.proxies.setdefault(prefixed[1], {})[prefixed[2]] = stored
        # A proxied primitive node's value goes to the widgets it feeds.
        for source, entries in list(child.proxies.items()):
            node = next((n for n in child.nodes.values() if str(n["id"]) == source), None)
            if node is None or node["type"] != "PrimitiveNode" or not entries:
                continue
            stored = next(iter(entries.values()))
            del child.proxies[source]
            for link in child.links.values():
                target = child.nodes.get(link[3])
                if link[1] != node["id"] or target is None:
                    continue
                for socket in target.get("inputs") or []:
                    if socket.get("link") == link[0]:
                        child.proxies.setdefault(str(target["id"]), {})[socket["name"]] = stored
        return child

    def _host_values(self, child: _Scope) -> None:
        """The subgraph node's saved widget values, by subgraph input (and by inner widget for
        legacy ``proxyWidgets`` entries), as the frontend reads them: with
        ``properties.proxyWidgets`` the i-th value belongs to its i-th entry (["-1", input] for a
        promoted input); without, one value per promoted input in input order, plus the control
        values after a widget that has them where an older frontend saved those too."""
        instance, definition = child.instance, child.definition
        names = [entry["name"] for entry in definition.get("inputs") or []]
        values = instance.get("widgets_values")
        if isinstance(values, dict):
            for name, value in values.items():
                if name in names:
                    child.host[name] = (value, self._host_key(child, name, name))
            return
        values = values or []
        proxies = (instance.get("properties") or {}).get("proxyWidgets")
        if isinstance(proxies, list) and proxies:
            for position, entry in enumerate(proxies[: len(values)]):
                if not isinstance(entry, list) or len(entry) < 2:
                    continue
                source, name = str(entry[0]), str(entry[1])
                stored = (values[position], self._host_key(child, position, name))
                if source == "-1":
                    if name in names:
                        child.host[name] = stored
                elif not name.startswith("$$"):  # "$$..." entries are previews, not values
                    child.proxies.setdefault(source, {})[name] = stored
            return
        promoted = self._promoted_inputs(definition)
        controls = len(values) > len(promoted)
        position = 0
        for index in sorted(promoted):
            if position < len(values):
                key = self._host_key(child, position, names[index])
                child.host[names[index]] = (values[position], key)
            position += 1 + (promoted[index] if controls else 0)

    def _host_key(self, child: _Scope, position, name: str) -> tuple:
        key = ("host", id(child.instance), position)
        self.stores.setdefault(key, ("host", child.instance, position, child, name))
        return key

    def _promoted_inputs(self, definition: dict, visiting: frozenset = frozenset()) -> dict:
        """Subgraph input index -> how many control values its widget has (see
        :func:`control_values`), for the inputs that feed a widget inside (directly or through
        a nested subgraph node): the ones the frontend shows as widgets on the subgraph node."""
        if definition["id"] in self._promoted:
            return self._promoted[definition["id"]]
        if definition["id"] in visiting:
            return {}
        nodes = {node["id"]: node for node in definition.get("nodes") or []}
        links = [_link_entry(link) for link in definition.get("links") or [] if link]
        promoted = {}
        for index in range(len(definition.get("inputs") or [])):
            for link in links:
                target = nodes.get(link[3])
                if link[1] != SUBGRAPH_INPUT or link[2] != index or target is None:
                    continue
                socket = next(
                    (s for s in target.get("inputs") or [] if s.get("link") == link[0]), None
                )
                if socket is None:
                    continue
                control = self._widget_control(target, socket, visiting | {definition["id"]})
                if control is not None:
                    promoted[index] = control
                    break
        self._promoted[definition["id"]] = promoted
        return promoted

    def _widget_control(self, node: dict, socket: dict, visiting: frozenset) -> int | None:
        """None if ``socket`` is not a widget input, else how many control values it has."""
        if self._is_instance(node):
            nested = self.subgraphs[node["type"]]
            names = [entry["name"] for entry in nested.get("inputs") or []]
            if socket["name"] not in names:
                return None
            return self._promoted_inputs(nested, visiting).get(names.index(socket["name"]))
        info = self.object_info.get(node["type"])
        spec = {name: (kind, options) for name, kind, options in node_inputs(info)} if info else {}
        if socket["name"] in spec and is_widget(*spec[socket["name"]]):
            return control_values(socket["name"], *spec[socket["name"]])
        return 0 if socket.get("widget") else None

    # -- writing values back ------------------------------------------------------------------

    def write(self, key: tuple, value) -> None:
        """Write the value at ``key`` and, where it is promoted, the values it stands in for:
        the inner widgets' it feeds and the nested subgraph nodes' on the way. Frontends 1.27
        and 1.58 send the outer subgraph node's value and pass those over (their inputs are
        linked), but 1.42 sends the inner widget's saved value: set only on the subgraph node, a
        value was queued there as the old one. Each is written only where every widget it is
        saved for (in every subgraph node using its definition) then sends ``value``: one another
        subgraph node sends its own value for is not ours to change, and stays (1.42 alone then
        sends the old value)."""
        self._store(key, value)
        for widget in self.users[key]:
            for inner in self.chains.get(widget, ())[:-1]:
                if self._agrees(inner, value):
                    self._store(inner, value)

    def _agrees(self, inner: tuple, value) -> bool:
        """Whether every widget that the value at ``inner`` stands for sends ``value``; never
        where a muted or bypassed subgraph node holds copies of it, not expanded to be read."""
        kind, _, _, scope, *_ = self.stores[inner]
        graph = scope.definition if kind == "node" else scope.parent.definition
        if graph is not None and graph["id"] in self.hidden:
            return False
        linked = self._linked_widgets()
        sent = [c[-1] for w, c in self.chains.items() if inner in c and w not in linked]
        return all(self._read(key) == value for key in sent)

    def _linked_widgets(self) -> set[tuple[str, str]]:
        """The widgets whose input the prompt links to a node that runs, sending no saved value
        (behind a PrimitiveNode or a muted node the saved one is sent)."""
        if self._linked is None:
            nodes = {node["id"]: node for node in self.nodes}
            self._linked = {
                (str(node["id"]), socket["name"])
                for node in self.nodes
                for socket in node.get("inputs") or []
                if socket.get("link") is not None
                and _resolve_source(
                    socket["link"],
                    self.links,
                    nodes,
                    self.boundary_types.get(socket["link"], socket.get("type", "*")),
                )
                is not None
            }
        return self._linked

    def _read(self, key: tuple):
        kind, holder, where, *_ = self.stores[key]
        if kind == "node":
            return widget_values(holder, self.object_info[holder["type"]]).get(where)
        values = holder.get("widgets_values") or []
        if isinstance(values, dict):
            return values.get(where)
        return values[where] if where < len(values) else None

    def _store(self, key: tuple, value) -> None:
        kind, holder, where, *rest = self.stores[key]
        if kind == "node":
            set_widget_value(holder, self.object_info[holder["type"]], where, value)
        else:  # a subgraph node's value: at its position, named as the promoted input
            _store_value(holder, where, rest[-1], value)

    def refuse_shared(self, key: tuple, chosen: list, sharing: list) -> None:
        kind, holder, _, scope, *rest = self.stores[key]
        node_id, name = chosen[0]
        others = ", ".join(f"{n}.{w}" for n, w in [*chosen[1:], *sharing])
        if kind == "node":
            problem = (
                f"it is inside subgraph {scope.name()}, which keeps one value for every "
                f"subgraph node using it, so {others} would take the same value"
            )
            fix = (
                f"set {others} to the same value too, or in ComfyUI promote the widget to an "
                "input of the subgraph (each subgraph node then keeps its own value)"
            )
        else:
            problem = (
                f"it takes the value of subgraph node {scope.parent.flat_id(holder['id'])}'s "
                f"widget {rest[0]!r}, which also feeds {others}"
            )
            fix = f"set {others} to the same value too"
        raise InputError(f"widget {node_id}.{name}", problem, fix)


def expand_subgraphs(ui_workflow: dict, object_info: dict) -> dict:
    """The UI workflow with every subgraph node replaced by the nodes inside it (ids "5:3",
    links renumbered), as the frontend expands them for the API prompt; a workflow without
    subgraph nodes is returned as it is."""
    return _flatten(ui_workflow, object_info)[0]


def _flatten(ui_workflow: dict, object_info: dict) -> tuple[dict, dict[int, str]]:
    """:func:`expand_subgraphs`' workflow, and the type each of its links that left a subgraph
    through one of its inputs is resolved with behind a bypassed node (see _Flattener._origin)."""
    if not _has_subgraph_nodes(ui_workflow):
        return ui_workflow, {}
    flat = _Flattener(ui_workflow, object_info)
    flat.expand()
    return {**ui_workflow, "nodes": flat.nodes, "links": list(flat.links.values())}, (
        flat.boundary_types
    )


def ui_to_api(ui_workflow: dict, object_info: dict) -> dict:
    """The API prompt graphToPrompt produces: {id: {"class_type", "inputs", "_meta"}}. Subgraph
    nodes are expanded first (see :func:`expand_subgraphs`)."""
    ui_workflow, boundary_types = _flatten(ui_workflow, object_info)
    links = {entry[0]: entry for entry in map(_link_entry, filter(None, ui_workflow["links"]))}
    nodes = {node["id"]: node for node in ui_workflow["nodes"]}
    prompt = {}
    for node in ui_workflow["nodes"]:
        if node["type"] in VIRTUAL_NODES or node.get("mode") in (MUTED, BYPASSED):
            continue
        if node["type"] not in object_info:
            if SUBGRAPH_ID.match(str(node["type"])):
                raise InputError(
                    "workflow",
                    f"node {node['id']} is a subgraph ({node['type']}) whose definition the "
                    "workflow does not carry",
                    "open it in ComfyUI and save it again (the frontend saves each subgraph "
                    "under definitions.subgraphs), or remove the node",
                )
            raise InputError(
                "workflow",
                f"node {node['id']} is a {node['type']}, which the server does not know",
                "install the node pack that provides it, or remove the node",
            )
        info = object_info[node["type"]]
        inputs = {name: api_value(value) for name, value in widget_values(node, info).items()}
        for socket in node.get("inputs", []):
            if socket.get("link") is None:
                continue
            wanted = boundary_types.get(socket["link"], socket["type"])
            source = _resolve_source(socket["link"], links, nodes, wanted)
            if source is not None:
                inputs[socket["name"]] = source
        prompt[str(node["id"])] = {
            "inputs": inputs,
            "class_type": node["type"],
            "_meta": {"title": node.get("title", info["display_name"])},
        }
    return prompt
