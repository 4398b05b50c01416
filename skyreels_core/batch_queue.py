"""``python -m skyreels_core queue``: batch renders of a shared workflow on a running ComfyUI.

Pipeline engineers take the workflow an artist saved (the UI format, or the frontend's "Export
(API)") and queue it once per seed and prompt, with any widget overridden, without a browser.
The server's own ``/object_info`` drives the UI -> API conversion, so every pack's nodes convert
as the frontend converts them; for UI workflows the edited workflow also travels in the prompt's
metadata, so a saved file dragged back into ComfyUI opens as the variant that made it. It talks
only to the server named by ``--server`` (default: this machine).
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .batch_resume import QUEUE, SKIP, WAIT, match, read_report, step, variant_key, waitable_ids
from .comfy_server import ComfyServer, DownloadMissing, PromptRefused, UploadRefused
from .errors import InputError
from .file_kinds import SUFFIXES, files_of, kind_of
from .paths import (
    output_file,
    output_folder,
    write_json,
)
from .workflow_format import (
    SEED_NAMES,
    is_api_prompt,
    is_link,
    node_inputs,
    ui_to_api,
    widget_table,
    with_widget_values,
)

Widget = tuple[str, str]  # (node id, input name)
MAX_RENDERS = 100_000  # seeds of one call: more than any queue holds, far less than fills memory
PROMPT_NAMES = ("prompt", "text")  # this pack's and the core text encoders' prompt widgets
# A file picker with an upload button, and the kinds of file it takes.
UPLOAD_FLAGS = {
    "image_upload": ("image",),
    "video_upload": ("video",),
    "audio_upload": ("sound", "video"),
}
# File pickers without an upload button, and the kinds they take: Load AV Latent lists saved
# takes only (a render_takes download folder also holds each take's preview clip).
PICKER_KINDS = {("SkyReelsV4LoadAVLatent", "av_latent"): ("take",)}


def parse_seeds(spec: str) -> list[int]:
    """'0-3,10' -> [0, 1, 2, 3, 10]."""
    seeds = []
    for part in spec.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise InputError(
                "--seeds", f"{part.strip()!r} is not a seed or a range", "write e.g. 0-9 or 1,5,7"
            ) from None
        if last < first:  # low holds no "-": a seed written is never negative
            raise InputError("--seeds", f"{part.strip()!r} is an empty range", "write e.g. 0-9")
        if len(seeds) + last - first + 1 > MAX_RENDERS:  # before the list: 0-99999999999 ran
            raise InputError(  # out of memory with a traceback
                "--seeds",
                f"{len(seeds) + last - first + 1} seeds",
                f"queue at most {MAX_RENDERS} renders a call",
            )
        seeds.extend(range(first, last + 1))
    repeated = sorted(seed for seed, count in Counter(seeds).items() if count > 1)
    if repeated:  # a seed renders the same take each time: a repeat only costs GPU time
        listed = ", ".join(map(str, repeated[:5])) + (", ..." if len(repeated) > 5 else "")
        raise InputError(
            "--seeds",
            f"{spec!r} gives seed{'s' * (len(repeated) > 1)} {listed} more than once",
            "list each once",
        )
    return seeds


def read_prompts(path: Path, paired: bool = False) -> list[str]:
    """One prompt per line; blank lines and lines starting with # are skipped. UTF-8, with or
    without the byte-order mark Windows editors write (else it would hide a first # line). A
    prompt on two lines is refused unless ``paired`` (--pair: two clips may want one sound)."""
    try:
        lines = Path(path).read_text(encoding="utf-8-sig").splitlines()
    except OSError as error:
        raise InputError(
            "--prompts", f"cannot read {path} ({error.strerror})", "name a text file"
        ) from None
    except UnicodeDecodeError as error:
        raise InputError(
            "--prompts", f"{path} is not UTF-8 text (byte {error.start})", "save it as UTF-8"
        ) from None
    numbered = [
        (number, line.strip())
        for number, line in enumerate(lines, 1)
        if line.strip() and not line.strip().startswith("#")
    ]
    if not numbered:
        raise InputError("--prompts", f"{path} holds no prompt", "write one prompt per line")
    if not paired:
        _refuse_repeats(path, numbered)
    return [prompt for _, prompt in numbered]


def _refuse_repeats(path: Path, numbered: list[tuple[int, str]]) -> None:
    """Refuse a prompt given on two lines, naming them (as an editor numbers them): with every
    seed it renders the same takes again, which only costs GPU time, as a repeated seed does."""
    lines: dict[str, list[int]] = {}
    for number, prompt in numbered:
        lines.setdefault(prompt, []).append(number)
    repeats = [numbers for numbers in lines.values() if len(numbers) > 1]
    if repeats:
        groups = [", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}" for numbers in repeats]
        listed = "; ".join(groups[:5]) + ("; ..." if len(groups) > 5 else "")
        raise InputError(
            "--prompts",
            f"{path} gives the same prompt on lines {listed}",
            "list each once (--seeds gives more takes of one prompt)",
        )


def _parse_value(text: str):
    """JSON where it parses (numbers, true/false, quoted strings), the text itself otherwise."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _listed(table: dict[str, tuple[str, dict]], widgets: list[Widget]) -> str:
    """'id.input (title)' of each widget."""
    return ", ".join(f"{n}.{name} ({table[n][0]})" for n, name in widgets)


def _describe(table: dict[str, tuple[str, dict]], nodes: list[str], widgets: bool = True) -> str:
    """'id (title)' of ``nodes``, with their widget names."""
    return "; ".join(
        f"{n} ({table[n][0]})" + (f": {', '.join(table[n][1])}" if widgets else "") for n in nodes
    )


def find_widgets(table: dict[str, tuple[str, dict]], target: str, flag: str) -> list[Widget]:
    """The widgets ``target`` names: ``INPUT`` (on any node) or ``NODE.INPUT``, NODE a node id or
    title. Errors list what the workflow has."""
    node_key, dot, name = target.rpartition(".")
    if dot:
        nodes = [n for n in table if n == node_key]
        nodes = nodes or [n for n, (title, _) in table.items() if title == node_key]
    else:
        nodes = list(table)
    if not nodes:
        listed = _describe(table, list(table), widgets=False)
        raise InputError(flag, f"no node has the id or title {node_key!r}", f"use one of {listed}")
    found = [(n, name) for n in nodes if name in table[n][1]]
    if not found:
        listed = _describe(table, nodes)
        raise InputError(flag, f"no widget {target!r} in the workflow", f"the widgets: {listed}")
    return found


def find_widget(table: dict[str, tuple[str, dict]], target: str, flag: str) -> Widget:
    """The one widget ``target`` names (see :func:`find_widgets`)."""
    widgets = find_widgets(table, target, flag)
    if len(widgets) > 1:
        listed = _listed(table, widgets)
        example = f"{widgets[0][0]}.{widgets[0][1]}"
        raise InputError(
            flag, f"{target!r} names several widgets: {listed}", f"name one, e.g. {example}"
        )
    return widgets[0]


def find_seed_widgets(table: dict[str, tuple[str, dict]], api_prompt: dict) -> list[Widget]:
    """The widgets a render's seeds come from: each widget named seed, and the one widget of a
    node wired into a seed input (the core Int node feeding a Sampler's seed), whose value the
    render reads in the seed's place."""
    found = [(n, name) for n, (_, values) in table.items() for name in values if name in SEED_NAMES]
    for node in api_prompt.values():
        for name, value in node["inputs"].items():
            if name not in SEED_NAMES or not is_link(value):
                continue
            source = str(value[0])
            widgets = list(table[source][1]) if source in table else []
            if len(widgets) == 1 and (source, widgets[0]) not in found:
                found.append((source, widgets[0]))
    return found


def _the_one(
    table: dict[str, tuple[str, dict]], found: list[Widget], flag: str, what: str
) -> Widget:
    """The single candidate a flag's default picks; otherwise the error asks for the flag."""
    if len(found) != 1:
        listed = _listed(table, found) or "none"
        raise InputError(
            flag,
            f"the workflow has no single {what} widget to fill (candidates: {listed})",
            f"name the widget, e.g. {flag} NODE.INPUT (NODE an id or title)",
        )
    return found[0]


def positive_prompt_widget(table: dict[str, tuple[str, dict]], api_prompt: dict) -> Widget:
    """The widget --prompts fills when --prompt-input is not given: the one text widget named
    prompt or text on a node that feeds no ``negative`` input, so a workflow with a negative
    prompt beside the prompt needs no flag."""
    negative = {
        str(value[0])
        for node in api_prompt.values()
        for name, value in node["inputs"].items()
        if name == "negative" and is_link(value)
    }
    found = [
        (node, name)
        for node, (_, values) in table.items()
        if node not in negative
        for name in PROMPT_NAMES
        if isinstance(values.get(name), str)
    ]
    return _the_one(table, found, "--prompt-input", "prompt")


def upload_widget(
    table: dict[str, tuple[str, dict]], api_prompt: dict, object_info: dict
) -> Widget:
    """The widget --inputs fills when --input-widget is not given: the workflow's one file
    picker with an upload button (the host's Load Image and Load Video, this pack's Load Audio)."""
    found = [
        (node_id, name)
        for node_id, node in api_prompt.items()
        if node_id in table and node["class_type"] in object_info
        for name, _, options in node_inputs(object_info[node["class_type"]])
        if any(options.get(flag) for flag in UPLOAD_FLAGS)
    ]
    return _the_one(table, found, "--input-widget", "file")


def upload_kinds(api_prompt: dict, object_info: dict, widget: Widget) -> tuple[str, ...] | None:
    """The kinds of file ``widget`` takes, by its upload button (or :data:`PICKER_KINDS`); None
    for another widget, whose files are not judged by their suffix."""
    node_id, name = widget
    class_type = api_prompt.get(node_id, {}).get("class_type")
    if (class_type, name) in PICKER_KINDS:
        return PICKER_KINDS[class_type, name]
    node_info = object_info.get(class_type)
    options = {}
    if node_info is not None:
        options = next((o for input_name, _, o in node_inputs(node_info) if input_name == name), {})
    return next((kinds for flag, kinds in UPLOAD_FLAGS.items() if options.get(flag)), None)


def _folder_files(folder: Path, kinds: tuple[str, ...] | None) -> list[Path]:
    """The files of ``folder`` (not hidden ones, by name) of ``kinds``: clips sit beside their
    captions (the layout train-demo-lora takes), so the others are skipped, and said so."""
    every = files_of(folder)
    kept, others = [], []
    for path in every:
        (kept if kinds is None or kind_of(path) in kinds else others).append(path)
    if not others:
        return kept
    wanted = " or ".join(kinds)
    found = ", ".join(sorted({path.suffix.lower() or path.name for path in others}))
    if not kept:
        suffixes = ", ".join(suffix for kind in kinds for suffix in SUFFIXES[kind])
        raise InputError(
            "--inputs",
            f"{folder} holds no {wanted} file (only {found})",
            f"put {wanted} files there ({suffixes}) or pick another widget with --input-widget",
        )
    print(
        f"skipped {len(others)} of {len(every)} files in {folder} that are not {wanted} ({found})",
        file=sys.stderr,
    )
    return kept


def _check_file(path: Path, kinds: tuple[str, ...] | None) -> None:
    """Refuse a named file that cannot be sent as it is or is clearly not what the widget
    takes (a caption or an image for a video picker); a suffix not listed is left to the
    server, which may read more than this command knows."""
    if any(character in path.name for character in '"\r\n'):
        raise InputError(
            "--inputs", f"{path.name!r} has a quote or line break in its name", "rename it"
        )
    kind = kind_of(path)
    if kinds is not None and kind is not None and kind not in kinds:
        wanted = " or ".join(kinds)
        raise InputError(
            "--inputs",
            f"{path} is {_a(kind)} file, not {_a(wanted)} file",
            f"name {wanted} files only (a folder's other files are skipped)",
        )


def _a(noun: str) -> str:
    """'an image', 'a video'."""
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def expand_inputs(paths: list[Path], kinds: tuple[str, ...] | None = None) -> list[Path]:
    """The --inputs files for a widget taking ``kinds`` (None: any file), refused before
    anything is uploaded or queued: a folder stands for its files of those kinds, and a pattern
    the shell left alone (Windows shells pass ``clips/*.mp4`` on as it is) for the files it
    matches, each checked as a file named on its own is, as the shell's expansion would be."""
    files = []
    for path in paths:
        if path.is_dir():
            found = _folder_files(path, kinds)
        elif not path.exists() and any(character in str(path) for character in "*?["):
            found = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
        else:
            found = [path]
        if not found or not found[0].is_file():
            raise InputError("--inputs", f"{path} names no file", "name files, e.g. clips/*.mp4")
        files += found
    for path in files:
        _check_file(path, kinds)
    return files


def variants(
    table: dict[str, tuple[str, dict]],
    seeds: list[int] | None,
    prompts: list[str] | None,
    prompt_widget: Widget | None,
    overrides: list[str],
    files: list[str] | list[Path] | None = None,
    file_widget: Widget | None = None,
    paired: bool = False,
    seed_targets: list[str] | tuple[str, ...] = (),
    seed_widgets: list[Widget] = (),
) -> list[dict[Widget, object]]:
    """The widget values of every render: the overrides, then each file x seed x prompt
    combination (``file_widget`` takes the files, ``prompt_widget`` the prompts), or with
    ``paired`` each file with its own prompt (the i-th with the i-th) x seed. Files are names,
    or local paths a caller swaps for their uploads' names. The seeds go to every seed widget
    (``seed_widgets``, :func:`find_seed_widgets`), or to those ``seed_targets`` name (reroll_sound: the second Sampler's, so one picture gets
    many sounds). Widgets the workflow seeds alike take the seed alike (a Sampler and its
    Refine); each further seed of the workflow's own takes the next one (long_video's second
    window, reroll_sound's new sound), as Extend to Length seeds its windows: written into both
    Samplers alike, a second window's sound came out a near copy of the first's."""
    fixed: dict[Widget, object] = {}
    for override in overrides:
        target, equals, value = override.partition("=")
        if not equals:
            raise InputError("--set", f"{override!r} has no '='", "write NODE.INPUT=VALUE")
        node, name = find_widget(table, target, "--set")
        fixed[(node, name)] = _parse_value(value)
    if seed_targets:
        if seeds is None:
            raise InputError("--seed-input", "given without --seeds", "add --seeds, or drop it")
        named = [find_widget(table, target, "--seed-input") for target in seed_targets]
        for node, name in named:
            if (node, name) not in seed_widgets:
                raise InputError(
                    "--seed-input", f"{node}.{name} is not a seed widget", "name a seed widget"
                )
        seed_widgets = named
    if seeds is not None and not seed_widgets:
        raise InputError("--seeds", "the workflow has no seed widget", "drop --seeds")
    if seeds is not None and set(fixed) & set(seed_widgets):
        raise InputError("--set", "a seed is set by both --set and --seeds", "keep one of them")
    if prompts is not None and prompt_widget in fixed:
        raise InputError("--set", "a prompt is set by both --set and --prompts", "keep one of them")
    if files is not None and file_widget in fixed:
        raise InputError("--set", "a file is set by both --set and --inputs", "keep one of them")
    if paired and (not files or not prompts or len(files) != len(prompts)):
        counts = f"{len(files or [])} files and {len(prompts or [])} prompts"
        raise InputError("--pair", counts, "give --inputs and --prompts one prompt per file")
    if paired:
        combos = [(f, seed, p) for f, p in zip(files, prompts) for seed in seeds or [None]]
    else:
        combos = itertools.product(files or [None], seeds or [None], prompts or [None])
    own_seeds = list(dict.fromkeys(table[node][1][name] for node, name in seed_widgets))
    offsets = {(node, name): own_seeds.index(table[node][1][name]) for node, name in seed_widgets}
    result = []
    for file, seed, prompt in combos:
        values = dict(fixed)
        if file is not None:
            values[file_widget] = file
        if seed is not None:
            values.update({widget: seed + offset for widget, offset in offsets.items()})
        if prompt is not None:
            values[prompt_widget] = prompt
        result.append(values)
    return result


def output_items(entry: dict) -> list[dict]:
    """Every file a finished prompt wrote: its outputs' items that name a file."""
    return [
        item
        for output in entry.get("outputs", {}).values()
        for items in output.values()
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict) and "filename" in item
    ]


def server_path(item: dict) -> str:
    """'<type>/<subfolder>/<name>', where the file lies under the server's folders."""
    parts = (item.get("type", "output"), item.get("subfolder", ""), item["filename"])
    return "/".join(p for p in parts if p)


def _failure(entry: dict) -> str:
    """The node that failed and its error, from the history's status messages."""
    for kind, message in entry.get("status", {}).get("messages", []):
        if kind == "execution_error":
            where = f"node {message.get('node_id')} ({message.get('node_type')})"
            return f"{where}: {message.get('exception_message', '').strip()}"
        if kind == "execution_interrupted":
            return "interrupted"
        if kind == "execution_cancelled":
            return (
                "gone from the server's queue and history: taken off the queue before it ran, "
                "or lost to a server restart (queue it again)"
            )
    return "failed without an error message"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", type=Path, help="a workflow .json (UI or API format)")
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI's address")
    parser.add_argument(
        "--seeds", help="one render per seed: 0-9, or 1,5,7; sets every seed widget"
    )
    parser.add_argument(
        "--seed-input",
        action="append",
        default=[],
        metavar="NODE.INPUT",
        help="the seed widget --seeds sets instead of every one (NODE an id or title), e.g. "
        "'Sampler (new sound).seed' in reroll_sound: one picture, many sounds; repeatable",
    )
    parser.add_argument("--prompts", type=Path, help="a text file, one prompt per line")
    parser.add_argument(
        "--prompt-input",
        help="the widget --prompts fills: INPUT or NODE.INPUT (NODE an id or title); default: "
        "the one prompt/text widget not wired to a sampler's negative input",
    )
    parser.add_argument(
        "--inputs",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="one render per file (x seeds x prompts), a folder's files of the kind the file "
        "widget takes (others, such as captions, skipped) or a pattern's matches: each is "
        "uploaded into the server's input folder and selected in the workflow's file widget",
    )
    parser.add_argument(
        "--pair",
        action="store_true",
        help="render each --inputs file with its own prompt (the i-th file, in the order given "
        "or sorted within a folder, with the i-th line of --prompts) instead of every combination",
    )
    parser.add_argument(
        "--input-widget",
        help="the widget --inputs fills: INPUT or NODE.INPUT; default: the workflow's one file "
        "picker with an upload button (Load Image, Load Video, Load Audio)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE.INPUT=VALUE",
        help="override a widget in every render (VALUE read as JSON where it parses); repeatable",
    )
    parser.add_argument("--wait", action="store_true", help="wait for each render, list its files")
    parser.add_argument(
        "--download",
        type=Path,
        metavar="DIR",
        help="fetch each render's files from the server into DIR (implies --wait; a file of "
        "the same name is kept and the new one numbered)",
    )
    parser.add_argument(
        "--report",
        metavar="FILE",
        help="write a JSON list of the renders (prompt id, widgets set, status, error, files, "
        "downloaded) here, also when the command stops early or the server does not answer",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="REPORT",
        help="an earlier --report (may be --report too): renders done there are skipped, ones "
        "still on the server taken over, the rest queued again",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="with --wait: stop waiting after this long in all; unfinished renders stay queued "
        "and make the command exit 1",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the API prompts instead of queueing them (a UI workflow, or one with "
        "--inputs, still reads the server's node list)",
    )


def _read_workflow(path: Path) -> dict:
    """The workflow file, UTF-8 with or without the byte-order mark a Windows editor writes."""
    try:
        workflow = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as error:
        raise InputError(
            "workflow", f"cannot read {path} ({error})", "pass a workflow .json"
        ) from None
    if not isinstance(workflow, dict) or not (
        is_api_prompt(workflow) or {"nodes", "links"} <= set(workflow)
    ):
        raise InputError("workflow", f"{path} is not a ComfyUI workflow", "save one from ComfyUI")
    return workflow


def _check_flags(args: argparse.Namespace) -> bool:
    """Whether the command waits for its renders; refuses flags that would do nothing or could
    only fail at the end."""
    for flag, given, needed, needed_flag in (
        ("--prompt-input", args.prompt_input, args.prompts, "--prompts"),
        ("--input-widget", args.input_widget, args.inputs, "--inputs"),
    ):
        if given and not needed:
            raise InputError(flag, f"given without {needed_flag}", f"add {needed_flag} or drop it")
    waits = args.wait or args.download is not None
    if args.timeout is not None and (not 0 < args.timeout < math.inf or not waits):
        raise InputError("--timeout", f"{args.timeout:g} s", "give a positive time with --wait")
    if args.download is not None and not args.dry_run:
        output_folder(args.download, "--download")
    if args.report is not None:  # a str: Path would drop the "/" that says a folder was meant
        args.report = output_file(args.report, "--report", "batch.json")
    return waits


def _prompt_widget(args: argparse.Namespace, table: dict, api_prompt: dict) -> Widget | None:
    """The widget --prompts fills: the one --prompt-input names, else the positive prompt."""
    if not args.prompts:
        return None
    if args.prompt_input:
        return find_widget(table, args.prompt_input, "--prompt-input")
    return positive_prompt_widget(table, api_prompt)


def _file_widget(
    args: argparse.Namespace, table: dict, api_prompt: dict, object_info: dict | None
) -> tuple[Widget | None, list[Path] | None]:
    """The widget --inputs fills and the files for it: chosen first, since a folder is searched
    for the kinds of file that widget takes."""
    if not args.inputs:
        return None, None
    if args.input_widget:
        widget = find_widget(table, args.input_widget, "--input-widget")
    else:
        widget = upload_widget(table, api_prompt, object_info)
    return widget, expand_inputs(args.inputs, upload_kinds(api_prompt, object_info, widget))


def _edited(workflow: dict, object_info: dict | None, values: dict) -> tuple[dict, dict]:
    """The workflow with ``values`` set, and the API prompt it queues as."""
    edited = with_widget_values(workflow, object_info, values)
    return edited, edited if is_api_prompt(workflow) else ui_to_api(edited, object_info)


def _queue_one(
    server: ComfyServer,
    workflow: dict,
    object_info: dict | None,
    values: dict,
    refusal: str | None = None,
    local_file: Path | None = None,
) -> dict:
    """Queue one render and return its record. A render the server refuses, its prompt (a value
    over a widget's maximum) or already the upload of its input file (``refusal``), is recorded
    as refused with the server's reason, so one bad variant does not keep the rest of the batch
    from being queued, waited for and reported."""
    edited, prompt = _edited(workflow, object_info, values)
    record = _record(values, "queued", local_file)
    if refusal is None:
        try:
            record["prompt_id"], dropped = server.queue(
                prompt, None if is_api_prompt(workflow) else edited
            )
        except PromptRefused as error:
            refusal = error.problem
        else:
            if dropped is not None:
                record["status"], record["dropped"] = "incomplete", dropped
                record["error"] = _dropped_error(dropped)
    if refusal is not None:
        record["status"], record["error"] = "refused", refusal
    return record


def _widget_values(values: dict[Widget, object]) -> dict[str, object]:
    """Widget values as a report names them: {'8.seed': 3}."""
    return {f"{node}.{name}": value for (node, name), value in values.items()}


def _dropped_error(dropped: str) -> str:
    return f"queued without the outputs the server refused: {dropped}"


def _record(values: dict, status: str, local_file: Path | None = None) -> dict:
    """A render's record; with --inputs, "input" names the local file it renders."""
    record = {"prompt_id": None, "widgets": _widget_values(values), "status": status, "files": []}
    return record if local_file is None else record | {"input": str(local_file)}


def _named(
    values: dict[Widget, object], widget: Widget | None, uploaded: dict[Path, str] | None = None
) -> dict[Widget, object]:
    """``values`` with the local file --inputs gives ``widget`` swapped for the name the server
    selects it by: its upload's, or before any upload its own."""
    path = values.get(widget)
    if path is None:
        return values
    return {**values, widget: path.name if uploaded is None else uploaded[path]}


def _queued_line(record: dict, number: int, total: int, todo: str = QUEUE, was: str = "") -> str:
    """'queued 1/4 p1: 8.seed=3' (with what the server dropped of it), 'refused 2/4
    (8.seed=...): the server's reason', or for a resumed batch's renders not queued again
    'skipped 3/4 (done before) p7: ...', 'queued 4/4 (queued before) p8: ...' and, for one done
    but never downloaded, 'queued 5/5 (done before, to download) p9: ...'; ``was``: the earlier
    record's status."""
    shown = ", ".join(f"{key}={value!r}" for key, value in record["widgets"].items())
    if record["status"] == "refused":
        variant = f" ({shown})" if shown else ""
        return f"refused {number}/{total}{variant}: {record['error']}"
    what = "skipped" if todo == SKIP else "queued"
    taken_over = " (done before, to download)" if was == "done" else " (queued before)"
    before = {SKIP: " (done before)", WAIT: taken_over}.get(todo, "")
    line = f"{what} {number}/{total}{before} {record['prompt_id']}"
    line += f": {shown}" if shown else ""
    return line + (f" ({record['error']})" if record["status"] == "incomplete" else "")


def run(args: argparse.Namespace) -> int:
    workflow = _read_workflow(args.workflow)
    waits = _check_flags(args)
    earlier = read_report(args.resume) if args.resume is not None else None  # before any write
    server = ComfyServer(args.server)
    api = is_api_prompt(workflow)
    # A UI workflow converts through the node list; --inputs reads its file pickers there.
    # The command's own flags are read before the server is asked: a typo is named as itself.
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    prompts = read_prompts(args.prompts, args.pair) if args.prompts else None
    needs_node_list = not api or args.inputs
    object_info = _at_start(args, earlier, server.object_info) if needs_node_list else None
    api_prompt = workflow if api else ui_to_api(workflow, object_info)
    table = widget_table(workflow, object_info)
    prompt_widget = _prompt_widget(args, table, api_prompt)
    input_widget, inputs = _file_widget(args, table, api_prompt, object_info)
    # Checked in full before the first upload. By path, not name: two files of one name upload
    # as two (or one is refused), and a resumed batch finds a render by its local file.
    seed_widgets = find_seed_widgets(table, api_prompt)
    renders = variants(
        table, seeds, prompts, prompt_widget, args.set, inputs, input_widget, args.pair,
        args.seed_input, seed_widgets,
    )  # fmt: skip
    matched, steps, kept = _plan(server, args, earlier, renders, input_widget)
    if args.dry_run:  # with --resume, the renders it would queue again
        for values, todo in zip(renders, steps):
            if todo == QUEUE:
                print(json.dumps(_edited(workflow, object_info, _named(values, input_widget))[1]))
        return 0
    records: list[dict] = []
    try:
        queued_files = {values.get(input_widget) for values, t in zip(renders, steps) if t == QUEUE}
        uploaded, refusals = _upload_all(server, [p for p in inputs or [] if p in queued_files])
        for values, earlier_record, todo in zip(renders, matched, steps):
            if todo == SKIP:  # carried over as it was
                record = earlier_record
            elif todo == WAIT:  # taken over under its prompt id, its old error void
                record = {k: v for k, v in earlier_record.items() if k != "error"}
                record["status"] = "queued"
            else:
                path, named = values.get(input_widget), _named(values, input_widget, uploaded)
                record = _queue_one(server, workflow, object_info, named, refusals.get(path), path)
            records.append(record)
            was = earlier_record["status"] if earlier_record else ""
            print(_queued_line(record, len(records), len(renders), todo, was))
        if waits:
            _wait_all(server, records, args)
    finally:
        # A batch stopped while queueing lists its renders not queued, each as the earlier
        # report had it where it had one, and keeps the earlier records no render took.
        if args.report is not None:
            rest = [
                record
                or _record(_named(values, input_widget), "not queued", values.get(input_widget))
                for values, record in zip(renders[len(records) :], matched[len(records) :])
            ]
            write_json(args.report, records + rest + kept, "--report")
    unsuccessful = ("refused", "incomplete", "failed", "unfinished", "undownloaded")
    return 1 if any(r["status"] in unsuccessful for r in records) else 0


def _plan(
    server: ComfyServer,
    args: argparse.Namespace,
    earlier: list[dict] | None,
    renders: list[dict[Widget, object]],
    file_widget: Widget | None,
) -> tuple[list[dict | None], list[str], list[dict]]:
    """Each render's earlier record and what to do with it (SKIP, WAIT or QUEUE), and the
    earlier records no render took that the report keeps; without --resume, every render is
    queued. Resuming asks the server first which earlier prompts it still holds."""
    if earlier is None:
        return [None] * len(renders), [QUEUE] * len(renders), []
    file_key = None if file_widget is None else ".".join(file_widget)
    keys = [
        variant_key(_widget_values(values), values.get(file_widget), file_key) for values in renders
    ]
    matched, kept = match(earlier, keys, file_key)
    downloads = args.download is not None
    known = _at_start(args, earlier, server.known, waitable_ids(matched, downloads))
    return matched, [step(record, known, downloads) for record in matched], kept


Answer = TypeVar("Answer")


def _at_start(
    args: argparse.Namespace, earlier: list[dict] | None, ask: Callable[..., Answer], *question
) -> Answer:
    """``ask(*question)`` of the server before anything is queued. Where it does not answer
    (nothing listening, or a page that is not JSON), --report still says so for a script that
    reads it after the command: a UI workflow's renders cannot even be listed without the node
    list, so it holds one record, not queued, with no widgets and the reason; with --resume,
    the earlier report's records as they were, which nothing changed (the same file is not
    rewritten)."""
    try:
        return ask(*question)
    except InputError as error:
        if args.report is None or args.dry_run:
            raise
        if earlier is None:
            failed = _record({}, "not queued") | {"error": f"nothing queued: {error.problem}"}
            write_json(args.report, [failed], "--report")
        elif not (args.report.exists() and os.path.samefile(args.report, args.resume)):
            write_json(args.report, earlier, "--report")
        raise


def _upload_all(server: ComfyServer, paths: list[Path]) -> tuple[dict[Path, str], dict[Path, str]]:
    """Upload each file: (path -> the name a widget selects it by, path -> why the server
    refused it). A refused file keeps its own name, which its refused renders show; the other
    files still render."""
    uploaded: dict[Path, str] = {}
    refusals: dict[Path, str] = {}
    for path in paths:
        try:
            uploaded[path] = server.upload(path)
        except UploadRefused as error:
            uploaded[path] = path.name
            refusals[path] = f"the server refused the upload of {path} ({error.problem})"
            print(f"{refusals[path]}. Fix: {error.fix}")
        else:
            print(f"uploaded {path} as input/{uploaded[path]}")
    return uploaded, refusals


def _wait_all(server: ComfyServer, records: list[dict], args: argparse.Namespace) -> None:
    """Wait for every queued render in turn (within --timeout in all), printing each outcome
    under its number in the batch; refused renders were never queued, skipped ones are done."""
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    for index, record in enumerate(records, 1):
        if record["status"] not in ("queued", "incomplete"):  # refused, or done before
            continue
        _wait_for(server, record, deadline, args)
        files = record.get("downloaded", record["files"])
        detail = record.get("error") or ", ".join(files)
        print(f"{record['status']} {index}/{len(records)} {record['prompt_id']}: {detail}")


def _wait_for(server: ComfyServer, record: dict, deadline: float | None, args) -> None:
    """Wait for one queued render and fill its record: status, error or files (downloaded
    into --download when given)."""
    entry = server.wait(record["prompt_id"], deadline=deadline)
    if entry is None:
        record["status"] = "unfinished"
        record["error"] = f"not done after {args.timeout:g} s (still on the server's queue)"
    elif entry["status"].get("status_str") == "error":
        record["status"], record["error"] = "failed", _failure(entry)
    else:  # a render queued without some of its outputs stays incomplete, waited for late too
        items = output_items(entry)
        record["files"] = [server_path(item) for item in items]
        if record.get("dropped"):
            record["status"], record["error"] = "incomplete", _dropped_error(record["dropped"])
        else:
            record["status"] = "done"
        if args.download is not None:
            _download_all(server, record, items, args.download)


def _download_all(server: ComfyServer, record: dict, items: list[dict], folder: Path) -> None:
    """Fetch a finished render's files into ``folder``; one the server no longer has leaves the
    render "undownloaded" (its other files still arrive), and the rest of the batch goes on."""
    record["downloaded"], missing = [], []
    for item in items:
        try:
            record["downloaded"].append(str(server.download(item, folder)))
        except DownloadMissing as error:
            missing.append(f"{server_path(item)}: {error.problem}")
    if missing:
        record["status"] = "undownloaded"
        record["error"] = "could not download " + "; ".join(missing)
