"""``python -m skyreels_core queue`` against a stand-in ComfyUI server speaking the same HTTP API:
what each queued prompt holds, what --wait reports, and the one-line errors. The real server runs
the same command in tests/test_comfyui_server.py."""

from __future__ import annotations

import json
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from skyreels_pack import NODE_CLASS_MAPPINGS
from workflow_tools import core_shims, object_info_from_mappings

from skyreels_core import batch_queue, comfy_server
from skyreels_core.__main__ import main
from skyreels_core.batch_queue import parse_seeds, positive_prompt_widget
from skyreels_core.errors import InputError
from skyreels_core.workflow_format import (
    is_api_prompt,
    node_inputs,
    set_widget_value,
    ui_to_api,
    widget_table,
    widget_values,
    with_widget_values,
)

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "workflows" / "assets"
TEXT_TO_VIDEO = ROOT / "workflows" / "text_to_video.json"
VIDEO_TO_AUDIO = ROOT / "workflows" / "video_to_audio.json"


class PrimitiveInt:
    """The core Int node (comfy_extras/nodes_primitive.py): one INT widget, wired into inputs."""

    RETURN_TYPES = ("INT",)
    FUNCTION = "execute"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"control_after_generate": True})}}


OBJECT_INFO = object_info_from_mappings(
    {**core_shims(ASSETS), "PrimitiveInt": PrimitiveInt, **NODE_CLASS_MAPPINGS}
)
SAMPLER, PROMPT = "8", "5"  # node ids in text_to_video.json
OTHER_SERVICE = {"service": "tagger", "routes": [f"/v1/tags/{n}" for n in range(20)]}


class FakeComfy:
    """GET /object_info, POST /prompt (400 with node_errors for a bogus solver or a value over
    its widget's maximum, as the host answers), GET /history/<id> and /queue: each prompt has
    finished at once with ``outcome`` ("success", "error", "interrupted", or "cancelled": never run,
    so no history and not queued), or is still "running": no history and on the queue (the first
    under queue_running, the rest under queue_pending); a prompt id not
    in ``prompt_ids`` (queued before a restart) has neither. A "login page"
    is another service at the address: every request is answered 200 with HTML; an "other
    service" answers every request 200 with JSON of its own. An upload over ``max_upload`` bytes
    is refused as ComfyUI's web server (aiohttp) refuses one over --max-upload-size, one of a
    name in ``bad_names`` as ComfyUI refuses a name it will not save (400, no body)."""

    def __init__(self, outcome: str = "success") -> None:
        self.posted: list[dict] = []
        self.inputs: dict[str, bytes] = {}  # the server's input folder: name -> bytes
        self.max_upload: int | None = None
        self.bad_names: set[str] = set()
        self.gone: set[str] = set()  # saved files since moved out of the output folder
        self.dropped: dict = {}  # node_errors of outputs a queued prompt runs without
        self.hiccups = 0  # GETs after /object_info answered 502 first, as a proxy's hiccup
        self.hiccup_at = "/"  # only GETs of paths starting so have the hiccups
        self.paths: list[str] = []
        self.prompt_ids: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self, status: int, body) -> None:
                data, kind = json.dumps(body).encode(), "application/json"
                if outcome == "login page":
                    status, data, kind = 200, b"<html><body>Sign in</body></html>", "text/html"
                if outcome == "other service":
                    status, data = 200, json.dumps(OTHER_SERVICE).encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                fake.paths.append(self.path)
                if self.path == "/object_info":
                    return self._answer(200, OBJECT_INFO)
                if fake.hiccups and self.path.startswith(fake.hiccup_at):
                    fake.hiccups -= 1
                    return self._answer(502, {})
                if self.path.startswith("/view?"):  # the file's bytes: its own query
                    query = parse_qs(urlparse(self.path).query)
                    if query["filename"][0] in fake.gone:
                        self.send_response(404)
                        self.send_header("Content-Length", "0")
                        return self.end_headers()
                    data = "|".join(query[k][0] for k in ("filename", "subfolder", "type"))
                    self.send_response(200)
                    self.send_header("Content-Type", "video/mp4")
                    self.end_headers()
                    return self.wfile.write(data.encode())
                if self.path == "/queue":  # the host runs the first and lists the rest pending
                    queued = [[0, body_id, {}, {}, []] for body_id in fake.prompt_ids]
                    queued = queued if outcome == "running" else []
                    answer = {"queue_running": queued[:1], "queue_pending": queued[1:]}
                    return self._answer(200, answer)
                prompt_id = self.path.removeprefix("/history/")
                if outcome in ("cancelled", "running") or prompt_id not in fake.prompt_ids:
                    return self._answer(200, {})  # as the host answers for a prompt it forgot
                number = int(prompt_id.removeprefix("p"))
                status = {"status_str": "success", "completed": True, "messages": []}
                if outcome == "error":
                    error = {"node_id": SAMPLER, "node_type": "SkyReelsV4Sampler",
                             "exception_message": "steps: out of memory\n"}  # fmt: skip
                    status = {"status_str": "error", "completed": False,
                              "messages": [["execution_start", {}], ["execution_error", error]]}  # fmt: skip
                if outcome == "interrupted":  # stopped with the frontend's Cancel button
                    status = {"status_str": "error", "completed": False,
                              "messages": [["execution_start", {}],
                                           ["execution_interrupted", {"node_id": SAMPLER}]]}  # fmt: skip
                video = {"filename": f"clip_{number:05}_.mp4", "subfolder": "skyreels_v4",
                         "type": "output", "frame_count": 33}  # fmt: skip
                entry = {"status": status, "outputs": {"11": {"skyreels_videos": [video]}}}
                return self._answer(200, {prompt_id: entry})

            def do_POST(self) -> None:
                fake.paths.append(self.path)
                data = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/upload/image" and any(
                    f'"{n}"'.encode() in data for n in fake.bad_names
                ):
                    self.send_response(400)
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                too_big = fake.max_upload is not None and len(data) > fake.max_upload
                if self.path == "/upload/image" and too_big:
                    text = f"Maximum request body size {fake.max_upload} exceeded.".encode()
                    self.send_response(413, "Request Entity Too Large")
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    return self.wfile.write(text)
                if self.path == "/upload/image":
                    return self._answer(200, fake.upload(self.headers["Content-Type"], data))
                body = json.loads(data)
                refused = {
                    node_id: {"errors": problems, "class_type": node["class_type"]}
                    for node_id, node in body["prompt"].items()
                    if (problems := _validation_errors(node))
                }
                if refused:
                    error = {"type": "prompt_outputs_failed_validation", "message": "failed"}
                    return self._answer(400, {"error": error, "node_errors": refused})
                fake.posted.append(body)
                fake.prompt_ids.append(f"p{len(fake.posted)}")
                answer = {"prompt_id": fake.prompt_ids[-1], "number": 0, "node_errors": {}}
                return self._answer(200, answer | {"node_errors": fake.dropped})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def upload(self, content_type: str, data: bytes) -> dict:
        """The host's rule: an identical file of that name is kept, a different one numbered."""
        header = f"Content-Type: {content_type}\r\n\r\n".encode()
        parts = {
            part.get_param("name", header="content-disposition"): part
            for part in BytesParser(policy=HTTP).parsebytes(header + data).iter_parts()
        }
        assert parts["type"].get_content().strip() == "input"
        name, content = parts["image"].get_filename(), parts["image"].get_payload(decode=True)
        stem, dot, suffix = name.rpartition(".")
        number = 0
        while self.inputs.get(name, content) != content:
            number += 1
            name = f"{stem} ({number}){dot}{suffix}"
        self.inputs[name] = content
        return {"name": name, "subfolder": "", "type": "input"}

    def __enter__(self) -> FakeComfy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _validation_errors(node: dict) -> list[dict]:
    """The host's validation errors for one node of a prompt: a bogus solver, a number over its
    widget's maximum."""
    options = {name: opts for name, _, opts in node_inputs(OBJECT_INFO[node["class_type"]])}
    errors = []
    if node["inputs"].get("solver") == "bogus":
        errors.append({"message": "Value not in list", "details": "bogus"})
    for name, value in node["inputs"].items():
        highest = options[name].get("max")
        if not isinstance(value, list) and highest is not None and value > highest:
            errors.append(
                {"message": f"Value {value} bigger than max of {highest}", "details": name}
            )
    return errors


def _queue(capsys, *args: str) -> tuple[int, list[str], str]:
    code = main(["queue", *args])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_seed_input_rerolls_one_samplers_seed(capsys):
    """reroll_sound has two Samplers: --seeds set both (a new picture every render); with
    --seed-input only the new sound's seed moves. A widget no seed, or the flag alone, is named."""
    workflow = str(ROOT / "workflows" / "reroll_sound.json")
    ids = _node_ids(Path(workflow))
    first, second = ids["SkyReelsV4Sampler"], ids["Sampler (new sound)"]
    with FakeComfy() as server:
        code, _, _ = _queue(capsys, workflow, "--server", server.url, "--seeds", "5,6",
                            "--seed-input", "Sampler (new sound).seed")  # fmt: skip
    assert code == 0
    seeds = [(b["prompt"][first]["inputs"]["seed"], b["prompt"][second]["inputs"]["seed"])
             for b in server.posted]  # fmt: skip
    assert seeds == [(42, 5), (42, 6)]
    for flags, message in [
        (["--seeds", "5", "--seed-input", f"{first}.steps"], f"--seed-input: {first}.steps is not"),
        (["--seed-input", f"{first}.seed"], "--seed-input: given without --seeds"),
    ]:
        with FakeComfy() as server:
            code, _, err = _queue(capsys, workflow, "--server", server.url, *flags)
        assert code == 2 and server.posted == [] and err.startswith(f"error: {message}")


@pytest.mark.parametrize(
    ("name", "seeds"),
    [
        ("reroll_sound", [(5, 6), (6, 7)]),
        ("long_video", [(5, 6), (6, 7)]),
        ("low_res_keyframes_refiner", [(5, 5), (6, 6)]),
    ],
)
def test_seeds_reach_every_seed_widget_and_keep_the_workflows_own_seeds_apart(capsys, name, seeds):
    """Without --seed-input every seed widget takes each seed of --seeds: widgets the workflow
    seeds alike (a Sampler and its Refine, both 42) alike, one with a seed of its own (long_video's
    second window at 43, reroll_sound's new sound at 7) the next. Written alike into both, the
    second window's sound came out a near copy of the first's, and the reroll's sound drew the
    picture's noise; a second Sampler left at the workflow's seed would sound alike every render."""
    workflow = ROOT / "workflows" / f"{name}.json"
    nodes = sorted(json.loads(workflow.read_text())["nodes"], key=lambda node: node["id"])
    seeded = [str(n["id"]) for n in nodes if n["type"] in ("SkyReelsV4Sampler", "SkyReelsV4Refine")]
    first, second = seeded
    with FakeComfy() as server:
        code, _, _ = _queue(capsys, str(workflow), "--server", server.url, "--seeds", "5,6")
    assert code == 0
    assert [(b["prompt"][first]["inputs"]["seed"], b["prompt"][second]["inputs"]["seed"])
            for b in server.posted] == seeds  # fmt: skip


def _seed_fed_by(kind: str) -> dict:
    """text_to_video with its Sampler's seed converted to an input and fed by node 100: the
    core Int node (a node of its own in the prompt) or a legacy PrimitiveNode (virtual: its
    value is written into the widget it feeds), both at 42."""
    workflow = json.loads(TEXT_TO_VIDEO.read_text())
    sampler = next(node for node in workflow["nodes"] if str(node["id"]) == SAMPLER)
    sampler["inputs"].append(
        {"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 100}
    )
    slot = len(sampler["inputs"]) - 1
    workflow["nodes"].append({
        "id": 100, "type": kind, "pos": [0, 0], "size": [200, 80], "flags": {}, "order": 0,
        "mode": 0, "inputs": [], "properties": {}, "widgets_values": [42, "fixed"],
        "outputs": [{"name": "INT", "type": "INT", "links": [100], "slot_index": 0}],
    })  # fmt: skip
    workflow["links"].append([100, 100, 0, int(SAMPLER), slot, "INT"])
    return workflow


@pytest.mark.parametrize("kind", ["PrimitiveInt", "PrimitiveNode"])
def test_seeds_reach_a_seed_fed_by_another_node(capsys, tmp_path, kind):
    """A Sampler seed fed by the core Int node: --seeds wrote the Sampler's own widget, which the
    link overrides, so every render took the Int node's 42 and the batch reported success. The
    seeds now go to the node feeding it, and --set on the fed widget is refused by name. Fed by
    a legacy PrimitiveNode the render took the seed but the workflow saved with it showed 42."""
    path = tmp_path / "fed.json"
    path.write_text(json.dumps(_seed_fed_by(kind)))
    with FakeComfy() as server:
        code, _, err = _queue(capsys, str(path), "--server", server.url, "--seeds", "5,6")
    assert (code, err) == (0, "")
    for body, seed in zip(server.posted, (5, 6), strict=True):
        prompt, saved = body["prompt"], body["extra_data"]["extra_pnginfo"]["workflow"]
        primitive = next(node for node in saved["nodes"] if node["id"] == 100)
        assert primitive["widgets_values"][0] == seed
        if kind == "PrimitiveInt":
            assert prompt[SAMPLER]["inputs"]["seed"] == ["100", 0]
            assert prompt["100"]["inputs"]["value"] == seed
        else:
            assert prompt[SAMPLER]["inputs"]["seed"] == seed and "100" not in prompt
    if kind == "PrimitiveInt":
        with FakeComfy() as server:
            code, _, err = _queue(
                capsys, str(path), "--server", server.url, "--set", f"{SAMPLER}.seed=3"
            )
        assert (
            code == 2
            and server.posted == []
            and err.startswith(f"error: --set: no widget '{SAMPLER}.seed'")
        )


def test_seeds_are_not_guessed_into_a_node_of_several_widgets_feeding_a_seed(capsys, tmp_path):
    """Only a node of one widget wired into a seed input gives --seeds its widget: of several,
    which one the seed is made from is not known, so --seeds is refused rather than written into
    the first (here ``low``), which the render does not take as its seed."""
    api = ui_to_api(json.loads(TEXT_TO_VIDEO.read_text()), OBJECT_INFO)
    api[SAMPLER]["inputs"]["seed"] = ["100", 0]
    api["100"] = {"class_type": "RandomIntInRange", "inputs": {"low": 1, "high": 9}}
    path = tmp_path / "api.json"
    path.write_text(json.dumps(api))
    code, out, err = _queue(capsys, str(path), "--seeds", "5", "--dry-run")
    assert (code, out) == (2, [])
    assert err == "error: --seeds: the workflow has no seed widget. Fix: drop --seeds\n"


def test_a_primitive_feeding_several_widgets_takes_one_value_for_all():
    """The frontend gives every widget a PrimitiveNode feeds the primitive's value: setting one
    of them (--seed-input, --set) rendered it, but the saved workflow then showed the new value
    in all of them. Set alike they are written, primitive included; else refused by name."""
    workflow = _seed_fed_by("PrimitiveNode")
    sampler = next(node for node in workflow["nodes"] if str(node["id"]) == SAMPLER)
    sampler["inputs"].append(
        {"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 101}
    )
    workflow["nodes"][-1]["outputs"][0]["links"].append(101)
    workflow["links"].append([101, 100, 0, int(SAMPLER), len(sampler["inputs"]) - 1, "INT"])
    both = {(SAMPLER, "seed"): 7, (SAMPLER, "steps"): 7}
    edited = with_widget_values(workflow, OBJECT_INFO, both)
    assert next(n for n in edited["nodes"] if n["id"] == 100)["widgets_values"][0] == 7
    for values in ({(SAMPLER, "seed"): 7}, {**both, (SAMPLER, "steps"): 8}):
        with pytest.raises(InputError) as error:
            with_widget_values(workflow, OBJECT_INFO, values)
        assert str(error.value) == (
            f"widget {SAMPLER}.seed: it takes the value of PrimitiveNode 100, which feeds "
            f"{SAMPLER}.seed, {SAMPLER}.steps. Fix: set {SAMPLER}.seed, {SAMPLER}.steps to the "
            "same value"
        )


def test_a_prompt_the_consoles_code_page_lacks_is_printed_escaped(tmp_path, monkeypatch):
    """On Windows a redirected stdout is in the ANSI code page with strict errors: a prompt in
    another script ended the batch in a UnicodeEncodeError after queueing it, unreported."""
    import io
    import sys

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle bounces on the floor\n赤い丸が跳ねる\n", encoding="utf-8")
    console = io.TextIOWrapper(io.BytesIO(), encoding="cp1252", errors="strict")
    monkeypatch.setattr(sys, "stdout", console)
    with FakeComfy() as server:
        code = main(
            ["queue", str(TEXT_TO_VIDEO), "--server", server.url, "--prompts", str(prompts)]
        )
    console.flush()
    printed = console.buffer.getvalue().decode("cp1252")
    assert code == 0 and len(server.posted) == 2
    assert "queued 2/2 p2: 5.prompt='\\u8d64\\u3044" in printed


def test_a_server_file_name_windows_cannot_hold_downloads_under_a_portable_one(tmp_path):
    """A Linux server may save a name Windows refuses (a "?" or ":" from a prefix, a trailing
    dot): --download stopped the whole batch there, blaming the folder."""
    with FakeComfy() as server:
        client = comfy_server.ComfyServer(server.url)
        item = {"filename": 'take?:1 <"a|b">*.mp4.', "subfolder": "v", "type": "output"}
        path = client.download(item, tmp_path)
    assert path.name == "take__1 __a_b___.mp4"
    assert path.read_bytes() == b'take?:1 <"a|b">*.mp4.|v|output'  # what the server sent
    assert comfy_server.portable_name("..") == "_" and comfy_server.portable_name("a\\b") == "a_b"


def test_seed_ranges_parse():
    assert parse_seeds("0-3,10") == [0, 1, 2, 3, 10]
    assert parse_seeds("7") == [7]
    for bad in ("a", "5-2", "1,,2"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)
    with pytest.raises(ValueError, match="^--seeds: 100000000000 seeds"):  # was a MemoryError
        parse_seeds("0-99999999999")
    assert len(parse_seeds("0-99999")) == batch_queue.MAX_RENDERS  # the cap itself is allowed
    with pytest.raises(ValueError, match="^--seeds: 100001 seeds"):
        parse_seeds("0-99998,100000-100001")
    with pytest.raises(ValueError, match="^--seeds: '0-3,2,1-2' gives seeds 1, 2 more than once"):
        parse_seeds("0-3,2,1-2")  # rendered twice each: the same take, twice the GPU time


def test_the_commands_own_flags_are_read_before_the_server_is_asked(capsys):
    """A typo in --seeds with no server running was reported as "cannot reach ComfyUI"."""
    code, _, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", "http://127.0.0.1:9", "--seeds",
                          "a-b")  # fmt: skip
    assert code == 2 and err.startswith("error: --seeds: 'a-b' is not a seed or a range")


def test_widgets_are_written_where_the_frontend_keeps_them():
    workflow = json.loads(TEXT_TO_VIDEO.read_text())
    sampler = next(node for node in workflow["nodes"] if str(node["id"]) == SAMPLER)
    info = OBJECT_INFO["SkyReelsV4Sampler"]
    before = widget_values(sampler, info)
    set_widget_value(sampler, info, "seed", 7)
    set_widget_value(sampler, info, "steps", 4)
    # The seed's control value ("fixed") keeps its slot, so every other widget reads the same.
    assert sampler["widgets_values"][:3] == [7, "fixed", 4]
    assert widget_values(sampler, info) == {**before, "seed": 7, "steps": 4}
    named = {"widgets_values": {"seed": 1}}
    set_widget_value(named, info, "seed", 2)
    assert named["widgets_values"] == {"seed": 2}


def test_seeds_times_prompts_queue_with_overrides_and_report_their_files(capsys, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# one per line\na blue square moves left\n\na green triangle moves right\n")
    with FakeComfy() as server:
        code, out, err = _queue(
            capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--seeds", "3-4",
            "--prompts", str(prompts), "--prompt-input", "Prompt.prompt",
            "--set", f"{SAMPLER}.steps=4", "--set", "Negative prompt.prompt=blurry", "--wait",
        )  # fmt: skip
    assert (code, err) == (0, "")
    workflow = json.loads(TEXT_TO_VIDEO.read_text())
    base = ui_to_api(workflow, OBJECT_INFO)
    expected = [
        (seed, text)
        for seed in (3, 4)
        for text in ("a blue square moves left", "a green triangle moves right")
    ]
    assert len(server.posted) == len(expected)
    for body, (seed, text) in zip(server.posted, expected, strict=True):
        prompt = body["prompt"]
        assert prompt[SAMPLER]["inputs"]["seed"] == seed
        assert prompt[SAMPLER]["inputs"]["steps"] == 4
        assert prompt[PROMPT]["inputs"]["prompt"] == text
        assert prompt["6"]["inputs"]["prompt"] == "blurry"
        changed = {
            (node_id, name)
            for node_id, node in prompt.items()
            for name, value in node["inputs"].items()
            if value != base[node_id]["inputs"][name]
        }
        assert changed <= {
            (SAMPLER, "seed"),
            (SAMPLER, "steps"),
            (PROMPT, "prompt"),
            ("6", "prompt"),
        }
        # The workflow in the metadata is the variant itself: reopened, it converts to this prompt.
        saved = body["extra_data"]["extra_pnginfo"]["workflow"]
        assert ui_to_api(saved, OBJECT_INFO) == prompt
    assert out[0].startswith("queued 1/4 p1: ")
    assert "8.seed=3" in out[0] and "5.prompt='a blue square moves left'" in out[0]
    assert out[4:] == [f"done {i}/4 p{i}: output/skyreels_v4/clip_{i:05}_.mp4" for i in range(1, 5)]


def test_api_workflows_queue_without_reading_the_node_list(capsys, tmp_path):
    api = ui_to_api(json.loads(TEXT_TO_VIDEO.read_text()), OBJECT_INFO)
    path = tmp_path / "api.json"
    path.write_text(json.dumps(api))
    assert is_api_prompt(api) and not is_api_prompt(json.loads(TEXT_TO_VIDEO.read_text()))
    with FakeComfy() as server:
        code, out, _ = _queue(capsys, str(path), "--server", server.url, "--seeds", "5,9")
    assert code == 0 and len(out) == 2
    assert "/object_info" not in server.paths
    assert [body["prompt"][SAMPLER]["inputs"]["seed"] for body in server.posted] == [5, 9]
    assert all("extra_data" not in body for body in server.posted)
    assert with_widget_values(api, None, {(SAMPLER, "seed"): 5}) == server.posted[0]["prompt"]


def test_dry_run_prints_the_prompts_and_queues_nothing(capsys):
    with FakeComfy() as server:
        code, out, _ = _queue(
            capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--seeds", "1-2", "--dry-run"
        )
    assert code == 0 and server.posted == []
    assert [json.loads(line)[SAMPLER]["inputs"]["seed"] for line in out] == [1, 2]


@pytest.mark.parametrize(
    "outcome, reason",
    [("error", "node 8 (SkyReelsV4Sampler): steps: out of memory"),
     ("interrupted", "interrupted"),
     ("cancelled", "gone from the server's queue and history: taken off the queue before it "
                   "ran, or lost to a server restart (queue it again)")],
)  # fmt: skip
def test_a_failed_or_cancelled_render_is_reported_and_fails_the_command(capsys, outcome, reason):
    with FakeComfy(outcome) as server:
        code, out, _ = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--wait")
    assert code == 1
    assert out[-1] == f"failed 1/1 p1: {reason}"


def test_prompts_fill_the_prompt_not_wired_to_a_negative_input_by_default(capsys, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle bounces on the floor\n")
    for path in sorted((ROOT / "workflows").glob("*.json")):
        workflow = json.loads(path.read_text())
        titles = {node.get("title"): str(node["id"]) for node in workflow["nodes"]}
        api = ui_to_api(workflow, OBJECT_INFO)
        if "Prompt" not in titles:  # the storyboard's multi-shot encoder has no single prompt
            with pytest.raises(ValueError, match="no single prompt widget to fill"):
                positive_prompt_widget(widget_table(workflow, OBJECT_INFO), api)
            continue
        # The negative prompt is a text encoder too; only its wiring tells the two apart.
        assert api[titles["Negative prompt"]]["class_type"] == api[titles["Prompt"]]["class_type"]
        for form in (workflow, api):
            table = widget_table(form, OBJECT_INFO)
            assert positive_prompt_widget(table, api) == (titles["Prompt"], "prompt"), path.name
    with FakeComfy() as server:
        code, out, _ = _queue(
            capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--prompts", str(prompts)
        )
    assert code == 0 and out[0].startswith("queued 1/1 p1: 5.prompt='a red circle")
    inputs = server.posted[0]["prompt"]
    assert inputs[PROMPT]["inputs"]["prompt"] == "a red circle bounces on the floor"
    assert (
        inputs["6"]["inputs"]["prompt"]
        == ui_to_api(json.loads(TEXT_TO_VIDEO.read_text()), OBJECT_INFO)["6"]["inputs"]["prompt"]
    )


def test_download_fetches_each_render_without_overwriting(capsys, tmp_path):
    folder = tmp_path / "renders"
    folder.mkdir()
    (folder / "clip_00001_.mp4").write_bytes(b"an earlier render")
    with FakeComfy() as server:
        code, out, _ = _queue(
            capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--seeds", "1-2",
            "--download", str(folder),
        )  # fmt: skip
    assert code == 0
    first, second = folder / "clip_00001__1.mp4", folder / "clip_00002_.mp4"
    assert out[2:] == [f"done 1/2 p1: {first}", f"done 2/2 p2: {second}"]
    assert (folder / "clip_00001_.mp4").read_bytes() == b"an earlier render"
    assert first.read_bytes() == b"clip_00001_.mp4|skyreels_v4|output"
    assert second.read_bytes() == b"clip_00002_.mp4|skyreels_v4|output"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["clip_00001_.mp4", first.name, second.name]
    )  # no partial file left


def test_a_passing_gateway_error_while_waiting_is_asked_again(capsys, monkeypatch, tmp_path):
    """A proxy's 502 while renders are awaited is asked again after each pause: within them the
    batch finishes and downloads; past the last one it ends on one line naming the answer."""
    monkeypatch.setattr(comfy_server, "WAIT_RETRY_PAUSES_S", (0.0, 0.0))
    folder = tmp_path / "renders"
    folder.mkdir()
    with FakeComfy() as server:
        server.hiccups = 2
        code, out, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--seeds",
                                "1-2", "--download", str(folder))  # fmt: skip
    assert code == 0 and err.count("answered HTTP 502; asking again in 0 s") == 2
    assert out[2:] == [f"done {n}/2 p{n}: {folder / f'clip_0000{n}_.mp4'}" for n in (1, 2)]
    with FakeComfy() as server:
        server.hiccups = 3
        code, _, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--wait")
    assert code == 2 and err.count("asking again") == 2
    assert err.splitlines()[-1].startswith(
        f"error: --server: {server.url}/history/p1 answered HTTP 502"
    )


def test_the_queue_is_asked_again_while_waiting_but_not_at_the_start(capsys, monkeypatch, tmp_path):
    """A 502 on a look at the whole queue while a render is awaited is asked again, as one on
    its history is (the render, cancelled, is then reported failed). Resuming an API workflow
    reads the queue first of all: a 502 there is the batch's one-line error at once, naming the
    address, as every first contact is."""
    monkeypatch.setattr(comfy_server, "WAIT_RETRY_PAUSES_S", (0.0,))
    with FakeComfy("cancelled") as server:
        server.hiccups, server.hiccup_at = 1, "/queue"
        code, out, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--wait")
    assert (code, err) == (1, f"{server.url}/queue answered HTTP 502; asking again in 0 s\n")
    assert out[-1].startswith("failed 1/1 p1: gone from the server's queue and history")
    api, report = tmp_path / "api.json", tmp_path / "batch.json"
    api.write_text(json.dumps(ui_to_api(json.loads(TEXT_TO_VIDEO.read_text()), OBJECT_INFO)))
    report.write_text('[{"prompt_id": "p1", "widgets": {}, "status": "queued", "files": []}]')
    with FakeComfy() as server:
        server.hiccups, server.hiccup_at = 1, "/queue"
        code, _, err = _queue(capsys, str(api), "--server", server.url, "--resume", str(report))
    assert (code, server.posted) == (2, [])
    assert err == (
        f"error: --server: {server.url}/queue answered HTTP 502. Fix: check that --server names "
        "a ComfyUI server\n"
    )


def test_a_preview_in_the_servers_temp_folder_downloads_from_there(tmp_path):
    """Preview Video saves into the server's temp folder: its item says type temp, which /view
    is asked for (asked for output, the server looks in its output folder and answers 404)."""
    item = {"filename": "preview_00001_.mp4", "subfolder": "skyreels_v4", "type": "temp"}
    with FakeComfy() as server:
        path = comfy_server.ComfyServer(server.url).download(item, tmp_path)
    assert path.read_bytes() == b"preview_00001_.mp4|skyreels_v4|temp"
    assert batch_queue.server_path(item) == "temp/skyreels_v4/preview_00001_.mp4"
    # A file saved at the top of the output folder: its path has no empty part.
    assert batch_queue.server_path({"filename": "a.mp4", "subfolder": ""}) == "output/a.mp4"


def test_a_render_whose_file_is_gone_is_reported_and_the_rest_still_download(capsys, tmp_path):
    folder, report = tmp_path / "renders", tmp_path / "batch.json"
    folder.mkdir()
    with FakeComfy() as server:
        server.gone.add("clip_00002_.mp4")
        code, out, _ = _queue(
            capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--seeds", "1-3",
            "--download", str(folder), "--report", str(report),
        )  # fmt: skip
    assert code == 1
    assert out[3:] == [
        f"done 1/3 p1: {folder / 'clip_00001_.mp4'}",
        "undownloaded 2/3 p2: could not download output/skyreels_v4/clip_00002_.mp4: gone from "
        "the server (HTTP 404)",
        f"done 3/3 p3: {folder / 'clip_00003_.mp4'}",
    ]
    assert sorted(p.name for p in folder.iterdir()) == ["clip_00001_.mp4", "clip_00003_.mp4"]
    second = json.loads(report.read_text())[1]
    assert second["status"] == "undownloaded" and second["downloaded"] == []
    assert second["files"] == ["output/skyreels_v4/clip_00002_.mp4"]


def test_the_report_lists_every_render_even_when_the_command_is_stopped(
    capsys, tmp_path, monkeypatch
):
    report = tmp_path / "reports" / "batch.json"
    with FakeComfy("error") as server:
        code, _, _ = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--seeds", "4",
                            "--wait", "--report", str(report))  # fmt: skip
    assert code == 1
    assert json.loads(report.read_text()) == [
        {"prompt_id": "p1", "widgets": {"8.seed": 4}, "status": "failed", "files": [],
         "error": "node 8 (SkyReelsV4Sampler): steps: out of memory"},
    ]  # fmt: skip
    waited = []
    original_wait = comfy_server.ComfyServer.wait

    def stopped_on_the_second(self, prompt_id, **kwargs):
        waited.append(prompt_id)
        if len(waited) == 2:
            raise KeyboardInterrupt  # Ctrl-C while waiting
        return original_wait(self, prompt_id, **kwargs)

    monkeypatch.setattr(comfy_server.ComfyServer, "wait", stopped_on_the_second)
    with FakeComfy() as server:
        code, _, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--seeds",
                              "1-2", "--download", str(tmp_path / "renders"), "--report",
                              str(report))  # fmt: skip
    assert code == 130 and err.endswith("queue: interrupted\n")
    first, second = json.loads(report.read_text())
    assert first["status"] == "done" and first["widgets"] == {"8.seed": 1}
    assert first["files"] == ["output/skyreels_v4/clip_00001_.mp4"]
    assert first["downloaded"] == [str(tmp_path / "renders" / "clip_00001_.mp4")]
    assert second == {"prompt_id": "p2", "widgets": {"8.seed": 2}, "status": "queued", "files": []}


def test_a_render_queued_without_some_of_its_outputs_is_incomplete(capsys, tmp_path):
    """The host queues a prompt while one of its outputs is valid and names the others it drops
    in its answer's node_errors: a render_takes variant whose Save AV Latent was refused saved
    only its preview, and the batch reported it done and exited 0."""
    problem = {"message": "Value not in list", "details": "filename_prefix: '../x' not allowed"}
    report = tmp_path / "report.json"
    with FakeComfy() as server:
        server.dropped = {"9": {"errors": [problem], "class_type": "SkyReelsV4SaveAVLatent"}}
        code, out, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--seeds",
                                "1", "--wait", "--report", str(report))  # fmt: skip
    why = (
        "queued without the outputs the server refused: node 9 (SkyReelsV4SaveAVLatent): "
        "Value not in list: filename_prefix: '../x' not allowed"
    )
    assert (code, err) == (1, "")
    assert out == [f"queued 1/1 p1: {SAMPLER}.seed=1 ({why})", f"incomplete 1/1 p1: {why}"]
    (record,) = json.loads(report.read_text())
    assert (record["status"], record["error"]) == ("incomplete", why)
    assert record["files"] == ["output/skyreels_v4/clip_00001_.mp4"]


def test_an_incomplete_render_waited_for_past_the_timeout_stays_incomplete(capsys, tmp_path):
    """A render queued without its Save AV Latent, not done by --timeout, is unfinished; the
    batch resumed takes it over, and once done it is incomplete again with the outputs the
    server refused named, not done (its report once kept only "unfinished")."""
    problem = {"message": "Value not in list", "details": "filename_prefix: '../x' not allowed"}
    report = tmp_path / "report.json"
    batch = [str(TEXT_TO_VIDEO), "--seeds", "1", "--wait", "--report", str(report)]
    with FakeComfy("running") as server:
        server.dropped = {"9": {"errors": [problem], "class_type": "SkyReelsV4SaveAVLatent"}}
        code, _, _ = _queue(capsys, *batch, "--server", server.url, "--timeout", "0.3")
    (record,) = json.loads(report.read_text())
    assert (code, record["status"], record["prompt_id"]) == (1, "unfinished", "p1")
    with FakeComfy() as server:
        server.prompt_ids = ["p1"]  # done meanwhile
        code, out, _ = _queue(capsys, *batch, "--server", server.url, "--resume", str(report))
    why = (
        "queued without the outputs the server refused: node 9 (SkyReelsV4SaveAVLatent): "
        "Value not in list: filename_prefix: '../x' not allowed"
    )
    assert (code, server.posted, out[-1]) == (1, [], f"incomplete 1/1 p1: {why}")
    (record,) = json.loads(report.read_text())
    assert (record["status"], record["error"]) == ("incomplete", why)


def test_a_refused_render_is_reported_and_the_rest_still_run(capsys, tmp_path):
    """One seed over the widget's maximum: the server refuses that prompt alone, so the renders
    before and after it are still queued, waited for and downloaded, and the command exits 1."""
    too_big = 2**63  # one over the seed widget's maximum
    reason = f"node 8 (SkyReelsV4Sampler): Value {too_big} bigger than max of {too_big - 1}: seed"
    report, renders = tmp_path / "batch.json", tmp_path / "renders"
    with FakeComfy() as server:
        code, out, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--seeds",
                                f"1,{too_big},3", "--download", str(renders), "--report",
                                str(report))  # fmt: skip
    assert (code, err) == (1, "")
    assert out == [
        "queued 1/3 p1: 8.seed=1",
        f"refused 2/3 (8.seed={too_big}): {reason}",
        "queued 3/3 p2: 8.seed=3",
        f"done 1/3 p1: {renders / 'clip_00001_.mp4'}",
        f"done 3/3 p2: {renders / 'clip_00002_.mp4'}",
    ]
    assert [body["prompt"][SAMPLER]["inputs"]["seed"] for body in server.posted] == [1, 3]
    first, refused, last = json.loads(report.read_text())
    assert refused == {"prompt_id": None, "widgets": {"8.seed": too_big}, "status": "refused",
                       "files": [], "error": reason}  # fmt: skip
    assert (first["status"], last["status"]) == ("done", "done")
    assert sorted(p.name for p in renders.iterdir()) == ["clip_00001_.mp4", "clip_00002_.mp4"]
    # A value every render shares is refused for each: nothing is queued, and the command fails.
    with FakeComfy() as server:
        code, out, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--set",
                                "8.solver=bogus", "--wait")  # fmt: skip
    assert (code, err, server.posted) == (1, "", [])
    assert out == [
        "refused 1/1 (8.solver='bogus'): node 8 (SkyReelsV4Sampler): Value not in list: bogus"
    ]


def _node_ids(path: Path) -> dict[str, str]:
    """title (or type) -> node id of a shipped workflow."""
    nodes = json.loads(path.read_text())["nodes"]
    return {node.get("title", node["type"]): str(node["id"]) for node in nodes}


def test_inputs_upload_each_file_and_render_it_with_every_seed(capsys, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    first, second = clips / "take1.mp4", clips / "take2.mp4"
    first.write_bytes(b"first clip")
    second.write_bytes(b"second clip")
    (clips / ".DS_Store").write_bytes(b"hidden: not a clip")
    report = tmp_path / "batch.json"
    ids = _node_ids(VIDEO_TO_AUDIO)
    clip, sampler = ids["Source clip"], ids["SkyReelsV4Sampler"]
    with FakeComfy() as server:
        server.inputs["take2.mp4"] = b"someone else's take2"  # same name, other bytes
        code, out, err = _queue(
            capsys, str(VIDEO_TO_AUDIO), "--server", server.url, "--inputs", str(clips),
            "--seeds", "0-1", "--report", str(report),
        )  # fmt: skip
    assert (code, err) == (0, "")
    assert out[:2] == [f"uploaded {first} as input/take1.mp4",
                       f"uploaded {second} as input/take2 (1).mp4"]  # fmt: skip
    assert server.inputs == {"take1.mp4": b"first clip", "take2.mp4": b"someone else's take2",
                             "take2 (1).mp4": b"second clip"}  # fmt: skip
    expected = [(name, seed) for name in ("take1.mp4", "take2 (1).mp4") for seed in (0, 1)]
    for body, (name, seed) in zip(server.posted, expected, strict=True):
        assert body["prompt"][clip]["inputs"]["file"] == name
        assert body["prompt"][sampler]["inputs"]["seed"] == seed
        saved = body["extra_data"]["extra_pnginfo"]["workflow"]
        assert ui_to_api(saved, OBJECT_INFO) == body["prompt"]
    records = json.loads(report.read_text())
    assert [r["input"] for r in records] == [str(first)] * 2 + [str(second)] * 2
    assert records[2]["widgets"] == {f"{clip}.file": "take2 (1).mp4", f"{sampler}.seed": 0}


@pytest.mark.parametrize(
    "refusal, reason, fix",
    [("max_upload", "HTTP 413 Request Entity Too Large: Maximum request body size 1000 exceeded",
      "start ComfyUI with a larger --max-upload-size (MB)"),
     ("bad_names", "HTTP 400 Bad Request", "check the file's name")],
    ids=["over the upload limit", "a name it will not save"],
)  # fmt: skip
def test_a_refused_upload_is_reported_and_the_other_files_still_run(
    capsys, tmp_path, refusal, reason, fix
):
    """One clip the server will not take (over its upload limit, or a name it refuses): the
    server refuses that upload alone, so that clip's renders are reported refused (naming the
    file and the server's reason) and the other clips' renders are still queued, waited for and
    downloaded, and the command exits 1."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for name, size in (("a.mp4", 10), ("b.mp4", 5000), ("c.mp4", 20)):
        (clips / name).write_bytes(name.encode() * size)
    big = clips / "b.mp4"
    report, renders = tmp_path / "batch.json", tmp_path / "renders"
    ids = _node_ids(VIDEO_TO_AUDIO)
    clip, sampler = ids["Source clip"], ids["SkyReelsV4Sampler"]
    with FakeComfy() as server:
        server.max_upload, server.bad_names = (
            (1000, set()) if refusal == "max_upload" else (None, {"b.mp4"})
        )
        code, out, err = _queue(capsys, str(VIDEO_TO_AUDIO), "--server", server.url, "--inputs",
                                str(clips), "--seeds", "0-1", "--download", str(renders),
                                "--report", str(report))  # fmt: skip
    refused = f"the server refused the upload of {big} ({reason})"
    assert (code, err) == (1, "")
    assert out == [
        f"uploaded {clips / 'a.mp4'} as input/a.mp4",
        f"{refused}. Fix: {fix}",
        f"uploaded {clips / 'c.mp4'} as input/c.mp4",
        f"queued 1/6 p1: {clip}.file='a.mp4', {sampler}.seed=0",
        f"queued 2/6 p2: {clip}.file='a.mp4', {sampler}.seed=1",
        f"refused 3/6 ({clip}.file='b.mp4', {sampler}.seed=0): {refused}",
        f"refused 4/6 ({clip}.file='b.mp4', {sampler}.seed=1): {refused}",
        f"queued 5/6 p3: {clip}.file='c.mp4', {sampler}.seed=0",
        f"queued 6/6 p4: {clip}.file='c.mp4', {sampler}.seed=1",
        *(f"done {i}/6 p{n}: {renders / f'clip_{n:05}_.mp4'}" for i, n in ((1, 1), (2, 2),
                                                                           (5, 3), (6, 4))),
    ]  # fmt: skip
    assert sorted(server.inputs) == ["a.mp4", "c.mp4"]
    assert [body["prompt"][clip]["inputs"]["file"] for body in server.posted] == [
        "a.mp4", "a.mp4", "c.mp4", "c.mp4"
    ]  # fmt: skip
    records = json.loads(report.read_text())
    assert [(r["status"], r["input"]) for r in records] == [
        (status, str(clips / name))
        for status, name in (("done", "a.mp4"), ("refused", "b.mp4"), ("done", "c.mp4"))
        for _ in range(2)
    ]
    assert records[3] == {"prompt_id": None, "widgets": {f"{clip}.file": "b.mp4",
                          f"{sampler}.seed": 1}, "status": "refused", "files": [],
                          "error": refused, "input": str(big)}  # fmt: skip
    assert sorted(p.name for p in renders.iterdir()) == [f"clip_{n:05}_.mp4" for n in range(1, 5)]


def test_pair_gives_each_file_its_own_prompt(capsys, tmp_path):
    """50 clips with 50 sound descriptions are 50 renders (per seed), not 2,500."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("b_take.mp4", "a_take.mp4"):
        (clips / name).write_bytes(name.encode())
    prompts = tmp_path / "sounds.txt"
    prompts.write_text("steps on gravel\nrain on a window\n")
    ids = _node_ids(VIDEO_TO_AUDIO)
    with FakeComfy() as server:
        code, out, _ = _queue(capsys, str(VIDEO_TO_AUDIO), "--server", server.url, "--inputs",
                              str(clips), "--prompts", str(prompts), "--pair", "--seeds", "1-2",
                              "--dry-run")  # fmt: skip
        assert code == 0
        renders = [json.loads(line) for line in out]
        assert [(r[ids["Source clip"]]["inputs"]["file"], r[ids["Prompt"]]["inputs"]["prompt"],
                 r[ids["SkyReelsV4Sampler"]]["inputs"]["seed"]) for r in renders] == [
            ("a_take.mp4", "steps on gravel", 1), ("a_take.mp4", "steps on gravel", 2),
            ("b_take.mp4", "rain on a window", 1), ("b_take.mp4", "rain on a window", 2),
        ]  # fmt: skip
        prompts.write_text("steps on gravel\n")
        code, _, err = _queue(capsys, str(VIDEO_TO_AUDIO), "--server", server.url, "--inputs",
                              str(clips), "--prompts", str(prompts), "--pair")  # fmt: skip
    assert code == 2 and server.inputs == {}  # refused before any upload
    assert err == (
        "error: --pair: 2 files and 1 prompts. Fix: give --inputs and --prompts one prompt per "
        "file\n"
    )


def test_a_folder_of_clips_and_captions_gives_the_clips(capsys, tmp_path):
    """The layout train-demo-lora takes (each clip with its caption .txt beside it) paired with
    a prompt per clip: only the clips are uploaded and rendered, and the command says what it
    skipped. A folder with none of the widget's kind of file is refused by name."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("one", "two"):
        (clips / f"{name}.mp4").write_bytes(f"clip {name}".encode())
        (clips / f"{name}.txt").write_text(f"caption of {name}")
    prompts = tmp_path / "sounds.txt"
    prompts.write_text("steps on gravel\nrain on a window\n")
    ids = _node_ids(VIDEO_TO_AUDIO)
    with FakeComfy() as server:
        code, out, err = _queue(capsys, str(VIDEO_TO_AUDIO), "--server", server.url, "--inputs",
                                str(clips), "--prompts", str(prompts), "--pair")  # fmt: skip
    assert code == 0
    assert err == f"skipped 2 of 4 files in {clips} that are not video (.txt)\n"
    assert server.inputs == {"one.mp4": b"clip one", "two.mp4": b"clip two"}
    assert [(body["prompt"][ids["Source clip"]]["inputs"]["file"],
             body["prompt"][ids["Prompt"]]["inputs"]["prompt"]) for body in server.posted] == [
        ("one.mp4", "steps on gravel"), ("two.mp4", "rain on a window"),
    ]  # fmt: skip
    for clip in clips.glob("*.mp4"):
        clip.unlink()
    with FakeComfy() as server:
        code, _, err = _queue(capsys, str(VIDEO_TO_AUDIO), "--server", server.url, "--inputs",
                              str(clips))  # fmt: skip
    assert (code, server.inputs, server.posted) == (2, {}, [])
    assert err == (
        f"error: --inputs: {clips} holds no video file (only .txt). Fix: put video files there "
        "(.mp4, .mov, .mkv, .webm, .avi) or pick another widget with --input-widget\n"
    )


def test_a_takes_folder_gives_load_av_latent_its_takes_only(capsys, tmp_path):
    """README's flow: render_takes --download takes/, then refine_saved_take --inputs takes/.
    The folder also holds each take's preview clip, which was queued as a take and refused with
    advice to convert it to safetensors; the takes alone are uploaded now."""
    takes = tmp_path / "takes"
    takes.mkdir()
    for number in (1, 2):
        (takes / f"take_0000{number}.av_latent.safetensors").write_bytes(b"take")
        (takes / f"take_preview_0000{number}.mp4").write_bytes(b"clip")
    workflow = str(ROOT / "workflows" / "refine_saved_take.json")
    with FakeComfy() as server:
        code, _, err = _queue(capsys, workflow, "--server", server.url, "--inputs", str(takes),
                              "--input-widget", "av_latent")  # fmt: skip
    assert code == 0 and len(server.posted) == 2
    assert sorted(server.inputs) == ["take_00001.av_latent.safetensors",
                                     "take_00002.av_latent.safetensors"]  # fmt: skip
    assert err == f"skipped 2 of 4 files in {takes} that are not take (.mp4)\n"


def test_inputs_keep_the_kinds_of_file_the_widget_takes(capsys, tmp_path):
    """Load Image takes images, this pack's Load Audio every file it lists (sounds and videos);
    a file named on its own is refused only when its suffix says it is another kind."""
    from skyreels_pack.nodes.media import AUDIO_KINDS

    from skyreels_core.file_kinds import SUFFIXES

    AUDIO_SUFFIXES = [suffix for kind in AUDIO_KINDS for suffix in SUFFIXES[kind]]
    media = tmp_path / "media"
    media.mkdir()
    others = ["cover.png", "still.JPG", "notes.txt"]
    sounds = [f"sound{suffix}" for suffix in AUDIO_SUFFIXES]
    for name in [*others, *sounds]:
        (media / name).write_bytes(name.encode())
    references = ROOT / "workflows" / "references.json"
    ids = _node_ids(references)
    image, sound = ids["Reference image"], ids["Reference sound"]
    with FakeComfy() as server:
        code, out, err = _queue(capsys, str(references), "--server", server.url, "--inputs",
                                str(media), "--input-widget", "Reference image.image",
                                "--dry-run")  # fmt: skip
        assert code == 0
        assert [json.loads(line)[image]["inputs"]["image"] for line in out] == [
            "cover.png",
            "still.JPG",
        ]
        assert err == (
            f"skipped {len(sounds) + 1} of {len(sounds) + 3} files in {media} that are not image "
            f"({', '.join(sorted({*AUDIO_SUFFIXES, '.txt'}))})\n"
        )
        code, out, err = _queue(capsys, str(references), "--server", server.url, "--inputs",
                                str(media), "--input-widget", "Reference sound.audio",
                                "--dry-run")  # fmt: skip
        assert code == 0
        assert [json.loads(line)[sound]["inputs"]["audio"] for line in out] == sorted(sounds)
        assert err == (
            f"skipped 3 of {len(sounds) + 3} files in {media} that are not sound or video "
            "(.jpg, .png, .txt)\n"
        )
        # Named on its own: a caption or an image is refused for a video picker; a suffix this
        # command does not list is left to the server.
        for name, kind in (("notes.txt", "a text"), ("cover.png", "an image")):
            code, _, err = _queue(capsys, str(VIDEO_TO_AUDIO), "--server", server.url,
                                  "--inputs", str(media / name))  # fmt: skip
            assert code == 2 and err == (
                f"error: --inputs: {media / name} is {kind} file, not a video file. Fix: name "
                "video files only (a folder's other files are skipped)\n"
            )
        (media / "take.mxf").write_bytes(b"mxf")
        code, out, _ = _queue(capsys, str(VIDEO_TO_AUDIO), "--server", server.url, "--inputs",
                              str(media / "take.mxf"), "--dry-run")  # fmt: skip
    assert code == 0
    assert json.loads(out[0])[_node_ids(VIDEO_TO_AUDIO)["Source clip"]]["inputs"]["file"] == (
        "take.mxf"
    )


def test_inputs_fill_the_one_file_picker_or_the_one_named(capsys, tmp_path, monkeypatch):
    image = tmp_path / "portrait.png"
    image.write_bytes(b"png")
    (tmp_path / "takes").mkdir()
    (tmp_path / "takes" / "take.mp4").write_bytes(b"mp4")
    (tmp_path / "takes" / "a_take.mp4").write_bytes(b"mp4")
    api = tmp_path / "api.json"
    api.write_text(json.dumps(ui_to_api(json.loads(VIDEO_TO_AUDIO.read_text()), OBJECT_INFO)))
    masked_edit = ROOT / "workflows" / "masked_edit.json"
    ids = _node_ids(masked_edit)
    listed = batch_queue.glob.glob  # a file system listing a folder in another order than sorted
    monkeypatch.setattr(batch_queue.glob, "glob", lambda pattern: sorted(listed(pattern))[::-1])
    with FakeComfy() as server:
        # An API workflow has no widget types of its own: the node list tells the file picker.
        # A pattern no shell expanded (Windows) is expanded here.
        code, out, _ = _queue(capsys, str(api), "--server", server.url, "--inputs",
                              str(tmp_path / "takes" / "*.mp4"), "--dry-run")  # fmt: skip
        assert code == 0 and "/object_info" in server.paths
        source = _node_ids(VIDEO_TO_AUDIO)["Source clip"]
        assert [json.loads(line)[source]["inputs"]["file"] for line in out] == [
            "a_take.mp4",
            "take.mp4",
        ]  # sorted, as a shell expands it
        code, _, err = _queue(capsys, str(masked_edit), "--server", server.url, "--inputs",
                              str(image))  # fmt: skip
        assert code == 2 and err == (
            "error: --input-widget: the workflow has no single file widget to fill (candidates: "
            f"{ids['Source clip']}.file (Source clip), {ids['Edit mask (white = change)']}.image "
            "(Edit mask (white = change))). Fix: name the widget, e.g. --input-widget NODE.INPUT "
            "(NODE an id or title)\n"
        )
        code, out, _ = _queue(capsys, str(masked_edit), "--server", server.url, "--inputs",
                              str(image), "--input-widget", "Edit mask (white = change).image",
                              "--dry-run")  # fmt: skip
        assert code == 0 and server.inputs == {} and server.posted == []  # a dry run uploads none
        assert json.loads(out[0])[ids["Edit mask (white = change)"]]["inputs"]["image"] == (
            "portrait.png"
        )
        for missing in (tmp_path / "missing.mp4", tmp_path / "*.mp4"):
            code, _, err = _queue(capsys, str(VIDEO_TO_AUDIO), "--server", server.url,
                                  "--inputs", str(missing))  # fmt: skip
            assert code == 2 and err == (
                f"error: --inputs: {missing} names no file. Fix: name files, e.g. clips/*.mp4\n"
            )


def test_wait_gives_up_after_the_timeout_and_leaves_the_renders_queued(capsys):
    with FakeComfy("running") as server:
        code, out, _ = _queue(
            capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--seeds", "1-2",
            "--wait", "--timeout", "0.3",
        )  # fmt: skip
    assert code == 1
    assert out[2:] == [
        f"unfinished {i}/2 p{i}: not done after 0.3 s (still on the server's queue)" for i in (1, 2)
    ]
    # A render reached after the deadline is still asked about once: it may have finished.
    assert server.paths.count("/history/p2") == 1


def test_the_timeout_bounds_the_whole_wait_not_each_render(capsys, monkeypatch):
    """--timeout is the wait in all: on a clock that moves only while the command sleeps, it
    sleeps the timeout's length waiting for the first render and not at all for the second,
    asked about once at the deadline."""
    clock, slept = [0.0], []

    def sleep(seconds: float) -> None:
        assert seconds > 0  # a sleep of 0 s polls without pause
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(comfy_server.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(comfy_server.time, "sleep", sleep)
    with FakeComfy("running") as server:
        code, out, _ = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--seeds",
                              "1-2", "--wait", "--timeout", "5")  # fmt: skip
    assert (code, slept) == (1, [1.0] * 5)
    assert out[2:] == [
        f"unfinished {n}/2 p{n}: not done after 5 s (still on the server's queue)" for n in (1, 2)
    ]
    assert server.paths.count("/history/p2") == 1


def test_waiting_asks_for_the_render_not_the_whole_queue_each_poll():
    """The whole queue is megabytes with hundreds of renders pending; it was fetched every
    second beside the render's own history. It is looked at once every QUEUE_CHECK_EVERY polls
    (the first included, so a cancelled render is still seen at once)."""
    import time

    with FakeComfy("running") as server:
        client = comfy_server.ComfyServer(server.url)
        prompt_id, _ = client.queue(ui_to_api(json.loads(TEXT_TO_VIDEO.read_text()), OBJECT_INFO))
        assert client.wait(prompt_id, poll_s=0.005, deadline=time.monotonic() + 1.0) is None
    polls, looks = server.paths.count(f"/history/{prompt_id}"), server.paths.count("/queue")
    assert polls > 2 * comfy_server.QUEUE_CHECK_EVERY
    last_look = (polls - 1) % comfy_server.QUEUE_CHECK_EVERY != 0  # at the deadline, if not due
    assert looks == -(-polls // comfy_server.QUEUE_CHECK_EVERY) + last_look


def test_a_render_cancelled_between_looks_at_the_queue_is_not_reported_queued():
    """At the deadline the queue is looked at once more: a render taken off it since the last
    look read "unfinished (still on the server's queue)", and a script waited on it for ever."""
    import time

    class LeavesAfterOneLook(list):
        looks = 0

        def __iter__(self):
            self.looks += 1
            return super().__iter__() if self.looks == 1 else iter(())

    with FakeComfy("running") as server:
        client = comfy_server.ComfyServer(server.url)
        prompt_id, _ = client.queue(ui_to_api(json.loads(TEXT_TO_VIDEO.read_text()), OBJECT_INFO))
        server.prompt_ids = LeavesAfterOneLook(server.prompt_ids)
        entry = client.wait(prompt_id, poll_s=0.005, deadline=time.monotonic() + 0.03)
    assert server.prompt_ids.looks == 2 and entry["status"]["status_str"] == "error"


def test_a_render_gone_from_the_queue_is_seen_at_once_and_its_history_read_again(monkeypatch):
    """The queue is looked at on the first poll: a render cancelled before the batch waits for
    it reads as failed without a poll's pause (QUEUE_CHECK_EVERY seconds on the first look
    otherwise). One neither in the history nor on the queue has its history read once more: it
    may have finished between the two reads, and is then done, not failed as cancelled."""
    slept = []
    monkeypatch.setattr(comfy_server.time, "sleep", slept.append)
    prompt = ui_to_api(json.loads(TEXT_TO_VIDEO.read_text()), OBJECT_INFO)
    with FakeComfy("cancelled") as server:
        client = comfy_server.ComfyServer(server.url)
        prompt_id, _ = client.queue(prompt)
        entry = client.wait(prompt_id)
    assert (entry["status"]["status_str"], slept) == ("error", [])
    assert server.paths[1:] == [f"/history/{prompt_id}", "/queue", f"/history/{prompt_id}"]

    class FinishesAfterTheFirstRead(list):
        reads = 0

        def __contains__(self, prompt_id):  # the history's test of a prompt id
            self.reads += 1
            return self.reads > 1 and super().__contains__(prompt_id)

    with FakeComfy() as server:
        client = comfy_server.ComfyServer(server.url)
        prompt_id, _ = client.queue(prompt)
        server.prompt_ids = FinishesAfterTheFirstRead(server.prompt_ids)
        entry = client.wait(prompt_id)
    assert (entry["status"]["status_str"], slept) == ("success", [])
    assert server.paths[1:] == [f"/history/{prompt_id}", "/queue", f"/history/{prompt_id}"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "99.steps=4"], "--set: no node has the id or title '99'. Fix: use one of 1 ("),
        (["--set", "8.nope=4"], "--set: no widget '8.nope' in the workflow. Fix: the widgets: 8 ("),
        (["--set", "8.steps"], "--set: '8.steps' has no '='"),
        (["--prompts", "PROMPTS", "--prompt-input", "prompt"], "--prompt-input: 'prompt' names several widgets: 5.prompt (Prompt), 6.prompt (Negative prompt). Fix: name one, e.g. 5.prompt"),
        (["--timeout", "5"], "--timeout: 5 s. Fix: give a positive time with --wait"),
        (["--download", "PROMPTS"], "--download: PROMPTS is a file. Fix: name a folder"),
        (["--wait", "--timeout", "0"], "--timeout: 0 s. Fix: give a positive time with --wait"),
        (["--seeds", "x"], "--seeds: 'x' is not a seed or a range"),
        (["--seeds", "1-2", "--set", "8.seed=5"], "--set: a seed is set by both --set and --seeds"),
        (["--prompt-input", "5.prompt"], "--prompt-input: given without --prompts. Fix: add --prompts or drop it"),
        (["--input-widget", "1.file"], "--input-widget: given without --inputs. Fix: add --inputs or drop it"),
        (["--inputs", "PROMPTS", "--input-widget", "5.prompt", "--set", "5.prompt=x"], "--set: a file is set by both --set and --inputs"),
        (["--report", "FOLDER"], "--report: FOLDER names a folder. Fix: name a file, e.g. FOLDER/batch.json"),
        (["--prompts", "COMMENTS"], "--prompts: COMMENTS holds no prompt. Fix: write one prompt per line"),
        (["--prompts", "FOLDER"], "--prompts: cannot read FOLDER (Is a directory). Fix: name a text file"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_naming_the_fix(capsys, tmp_path, args, message):
    prompts, comments = tmp_path / "prompts.txt", tmp_path / "comments.txt"
    prompts.write_text("a red circle bounces on the floor\n")
    comments.write_text("# takes for Friday\n\n")
    named = {"PROMPTS": str(prompts), "COMMENTS": str(comments), "FOLDER": str(tmp_path)}
    args = [named.get(arg, arg) for arg in args]
    for placeholder, value in named.items():
        message = message.replace(placeholder, value)
    with FakeComfy() as server:
        code, _, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, *args)
    assert code == 2 and server.posted == []
    assert err.startswith(f"error: {message}") and err.count("\n") == 1


def test_an_unreachable_server_or_a_non_workflow_is_one_line(capsys, tmp_path):
    with FakeComfy() as server:
        url = server.url  # closed again on exit: nothing listens there now
    code, _, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", url)
    assert code == 2
    assert err.startswith(f"error: --server: cannot reach ComfyUI at {url}")
    assert err.rstrip().endswith("Fix: start ComfyUI or pass --server http://HOST:PORT")
    other = tmp_path / "other.json"
    for text in ('{"a": 1}', "{}"):  # "{}" has no node without a class_type, yet holds no node
        other.write_text(text)
        code, _, err = _queue(capsys, str(other), "--server", url)
        assert code == 2 and "is not a ComfyUI workflow" in err


def test_prompts_and_workflows_saved_with_a_byte_order_mark_read_as_written(capsys, tmp_path):
    """Windows editors start UTF-8 files with a byte-order mark: the first line stays a comment
    and the workflow parses. A prompt file in another encoding is one line naming the fix."""
    prompts, workflow = tmp_path / "prompts.txt", tmp_path / "workflow.json"
    prompts.write_text("# my prompts\r\na red circle\r\n", encoding="utf-8-sig")
    workflow.write_text(TEXT_TO_VIDEO.read_text(), encoding="utf-8-sig")
    with FakeComfy() as server:
        code, out, _ = _queue(capsys, str(workflow), "--server", server.url, "--prompts",
                              str(prompts), "--dry-run")  # fmt: skip
        assert code == 0
        assert [json.loads(line)[PROMPT]["inputs"]["prompt"] for line in out] == ["a red circle"]
        prompts.write_bytes("café au lait\n".encode("latin-1"))
        code, _, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--prompts",
                              str(prompts))  # fmt: skip
    assert (code, server.posted) == (2, [])
    assert err == f"error: --prompts: {prompts} is not UTF-8 text (byte 3). Fix: save it as UTF-8\n"


def test_a_server_that_does_not_answer_json_is_one_line(capsys, tmp_path):
    """A login page or another service at --server answers HTML, whichever request comes first:
    the node list for a UI workflow, the prompt for an API one."""
    api = tmp_path / "api.json"
    api.write_text(json.dumps(ui_to_api(json.loads(TEXT_TO_VIDEO.read_text()), OBJECT_INFO)))
    with FakeComfy("login page") as server:
        for workflow, path in ((TEXT_TO_VIDEO, "/object_info"), (api, "/prompt")):
            code, _, err = _queue(capsys, str(workflow), "--server", server.url)
            assert code == 2 and err == (
                f"error: --server: {server.url}{path} did not answer JSON. Fix: check that "
                "--server names a ComfyUI server\n"
            )


def test_a_server_answering_other_json_is_one_line(capsys, tmp_path):
    """Another service at --server that answers JSON, but not ComfyUI's: the answer to a prompt
    holds no prompt id, to an upload no file name. One line shows what it answered."""
    api = tmp_path / "api.json"
    api.write_text(json.dumps(ui_to_api(json.loads(VIDEO_TO_AUDIO.read_text()), OBJECT_INFO)))
    clip = tmp_path / "take.mp4"
    clip.write_bytes(b"mp4")
    upload = [
        "--inputs",
        str(clip),
        "--input-widget",
        f"{_node_ids(VIDEO_TO_AUDIO)['Source clip']}.file",
    ]
    answered = json.dumps(OTHER_SERVICE)[:200] + "..."
    with FakeComfy("other service") as server:
        for args, path, key in (([], "/prompt", "prompt_id"), (upload, "/upload/image", "name")):
            code, out, err = _queue(capsys, str(api), "--server", server.url, *args)
            assert (code, out) == (2, []) and err == (
                f"error: --server: {server.url}{path} answered {answered} with no {key!r}. Fix: "
                "check that --server names a ComfyUI server\n"
            )


class _CutShort(BaseHTTPRequestHandler):
    """A server that dies mid-reply: it promises 1000 bytes and sends 10."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b'{"Sky": {}')


@pytest.mark.parametrize("workflow", ["5", "[1, 2]", '"text"'])
def test_bad_servers_and_workflows_are_one_line(capsys, tmp_path, workflow):
    """A reply cut short (a server restarted mid-download), an address that is no http URL,
    a JSON file that is no object: one line each, never a traceback."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CutShort)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        code, _, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", url)
    finally:
        server.shutdown()
    assert code == 2 and err == (
        f"error: --server: cannot reach ComfyUI at {url} (IncompleteRead). Fix: start ComfyUI "
        "or pass --server http://HOST:PORT\n"
    )
    for address in ("http://[::1", "localhost:8188", "ftp://host/", "http://host:port"):
        code, _, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", address, "--dry-run")
        assert code == 2 and err == (
            f"error: --server: {address!r} is not an http(s) address. Fix: pass --server "
            "http://HOST:PORT\n"
        )
    path = tmp_path / "not_a_workflow.json"
    path.write_text(workflow)
    code, _, err = _queue(capsys, str(path))
    assert code == 2 and err.startswith(f"error: workflow: {path} is not a ComfyUI workflow")


def test_prompt_files_skip_indented_comments_and_a_set_prompt_clashes(capsys, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n   # not this one\n\ta blue square\n")
    assert batch_queue.read_prompts(prompts) == ["a red circle", "a blue square"]
    with FakeComfy() as server:
        code, _, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--prompts",
                              str(prompts), "--set", f"{PROMPT}.prompt=XYZ", "--dry-run")  # fmt: skip
        assert code == 2 and err.startswith("error: --set: a prompt is set by both --set and")
        code, _, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--wait",
                              "--timeout", "nan")  # fmt: skip
        assert code == 2 and err.startswith("error: --timeout: nan s")


def test_a_taken_av_latent_name_keeps_the_suffix_its_loader_lists(tmp_path):
    item = {"filename": "take_00004.av_latent.safetensors", "subfolder": "takes", "type": "output"}
    with FakeComfy() as server:
        comfy = comfy_server.ComfyServer(server.url)
        names = [comfy.download(item, tmp_path).name for _ in range(2)]
    assert names == ["take_00004.av_latent.safetensors", "take_00004_1.av_latent.safetensors"]


def test_a_name_another_batch_takes_during_the_download_is_passed_over(tmp_path, monkeypatch):
    """Two batches downloading into one folder: the name was checked free, then the other
    batch's file of that name arrived before this one was in place. It was replaced by this
    one (the other batch's report then named a file holding this render), and the other batch
    stopped on a shared partial file."""
    item = {"filename": "clip_00001_.mp4", "subfolder": "skyreels_v4", "type": "output"}
    taken = tmp_path / "clip_00001_.mp4"
    original = Path.write_bytes

    def other_batch_first(self, data):
        if not taken.exists():
            original(taken, b"the other batch's render")
        return original(self, data)

    monkeypatch.setattr(Path, "write_bytes", other_batch_first)
    with FakeComfy() as server:
        path = comfy_server.ComfyServer(server.url).download(item, tmp_path)
    assert path == tmp_path / "clip_00001__1.mp4"
    assert path.read_bytes() == b"clip_00001_.mp4|skyreels_v4|output"
    assert taken.read_bytes() == b"the other batch's render"
    assert sorted(p.name for p in tmp_path.iterdir()) == [taken.name, path.name]


def _seeds_posted(server: FakeComfy) -> list[int]:
    return [body["prompt"][SAMPLER]["inputs"]["seed"] for body in server.posted]


CONNECTION_RESET = InputError("--server", "cannot reach ComfyUI (Connection reset)", "start it")


def _stop_queueing_at_the_second(patch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Queueing the second prompt raises ``error``: the server gone mid-batch, or Ctrl-C."""
    original_queue = comfy_server.ComfyServer.queue
    calls = []

    def queue(self, *args):
        calls.append(args)
        if len(calls) == 2:
            raise error
        return original_queue(self, *args)

    patch.setattr(comfy_server.ComfyServer, "queue", queue)


def test_a_batch_stopped_while_queueing_reports_the_renders_it_never_queued(
    capsys, tmp_path, monkeypatch
):
    """The report held only the renders queued before the stop: a script following up could not
    tell the seeds never queued from seeds never asked for."""
    report = tmp_path / "batch.json"
    report.write_text("the previous batch's report")
    _stop_queueing_at_the_second(monkeypatch, CONNECTION_RESET)
    with FakeComfy() as server:
        code, _, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--seeds",
                              "1-3", "--report", str(report))  # fmt: skip
    assert code == 2 and "cannot reach ComfyUI" in err
    assert [
        (r["widgets"], r["status"], r["prompt_id"]) for r in json.loads(report.read_text())
    ] == [
        ({"8.seed": 1}, "queued", "p1"),
        ({"8.seed": 2}, "not queued", None),
        ({"8.seed": 3}, "not queued", None),
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["batch.json"]  # published whole, no partial


def test_resume_after_a_crash_takes_over_the_queued_render_and_queues_the_rest(
    capsys, tmp_path, monkeypatch
):
    """The connection dropped while queueing: resumed from its report, rewritten in place, the
    render queued before is waited for under its prompt id (not rendered twice) and the renders
    never queued are queued."""
    report = tmp_path / "batch.json"
    batch = [str(TEXT_TO_VIDEO), "--seeds", "1-3", "--report", str(report)]
    with FakeComfy() as server:
        with monkeypatch.context() as patch:
            _stop_queueing_at_the_second(patch, CONNECTION_RESET)
            assert _queue(capsys, *batch, "--server", server.url)[0] == 2
        code, out, err = _queue(capsys, *batch, "--server", server.url, "--wait", "--resume",
                                str(report))  # fmt: skip
    assert (code, err, _seeds_posted(server)) == (0, "", [1, 2, 3])
    assert out == [
        "queued 1/3 (queued before) p1: 8.seed=1",
        "queued 2/3 p2: 8.seed=2",
        "queued 3/3 p3: 8.seed=3",
        *(f"done {n}/3 p{n}: output/skyreels_v4/clip_{n:05}_.mp4" for n in (1, 2, 3)),
    ]
    assert [
        (r["widgets"], r["status"], r["prompt_id"]) for r in json.loads(report.read_text())
    ] == [({"8.seed": n}, "done", f"p{n}") for n in (1, 2, 3)]


def test_resume_skips_what_is_done_and_queues_again_what_the_server_cannot_finish(capsys, tmp_path):
    """Each status of an earlier report: done is carried over, queued or unfinished waited for
    where the server still holds the prompt, everything else (a prompt it forgot in a restart
    included) queued again. Records of renders this run does not ask for stay, but for those
    never queued; a dry run prints only the prompts it would queue."""
    statuses = ["done", "queued", "unfinished", "queued", "refused", "failed", "incomplete",
                "undownloaded", "not queued"]  # fmt: skip
    earlier = [
        {"prompt_id": None if status in ("refused", "not queued") else f"p{100 + seed}",
         "widgets": {"8.seed": seed}, "status": status, "files": [], "error": "earlier"}
        for seed, status in enumerate(statuses, 1)
    ]  # fmt: skip
    earlier[0] |= {"files": ["output/skyreels_v4/clip_00101_.mp4"], "downloaded": ["a.mp4"]}
    del earlier[0]["error"]
    other_seeds = [{"prompt_id": "p120", "widgets": {"8.seed": 20}, "status": "failed",
                    "files": [], "error": "out of memory"},
                   {"prompt_id": None, "widgets": {"8.seed": 21}, "status": "not queued",
                    "files": []}]  # fmt: skip
    report = tmp_path / "batch.json"
    report.write_text(json.dumps(earlier + other_seeds))
    batch = [str(TEXT_TO_VIDEO), "--seeds", "1-9", "--resume", str(report)]
    with FakeComfy() as server:
        server.prompt_ids += ["p101", "p102", "p103"]  # p104 was lost to a restart
        code, out, _ = _queue(capsys, *batch, "--server", server.url, "--dry-run")
        assert code == 0 and server.posted == []
        assert [json.loads(line)[SAMPLER]["inputs"]["seed"] for line in out] == [4, 5, 6, 7, 8, 9]
        code, out, err = _queue(capsys, *batch, "--server", server.url, "--wait", "--report",
                                str(report))  # fmt: skip
    assert (code, err, _seeds_posted(server)) == (0, "", [4, 5, 6, 7, 8, 9])
    assert out == [
        "skipped 1/9 (done before) p101: 8.seed=1",
        "queued 2/9 (queued before) p102: 8.seed=2",
        "queued 3/9 (queued before) p103: 8.seed=3",
        *(f"queued {n}/9 p{n - 3}: 8.seed={n}" for n in range(4, 10)),
        *(f"done {n}/9 p{n + 100}: output/skyreels_v4/clip_{n + 100:05}_.mp4" for n in (2, 3)),
        *(f"done {n}/9 p{n - 3}: output/skyreels_v4/clip_{n - 3:05}_.mp4" for n in range(4, 10)),
    ]
    records = json.loads(report.read_text())
    assert records[0] == earlier[0] and records[9:] == other_seeds[:1]
    assert all(r["status"] == "done" and "error" not in r for r in records[1:9])
    with FakeComfy("running") as server:  # a prompt still waiting is on the queue, not in history
        server.prompt_ids = ["p7"]
        assert comfy_server.ComfyServer(server.url).known(["p7", "p8"]) == {"p7"}


def test_resume_with_download_fetches_what_was_done_but_never_downloaded(capsys, tmp_path):
    """A batch first run with --wait only, resumed with --download: its renders are done, so
    not rendered again, but their files are fetched from the server's history; one already
    downloaded, or one the server forgot in a restart, keeps its record as it was."""
    earlier = [
        {"prompt_id": f"p{seed}", "widgets": {"8.seed": seed}, "status": "done",
         "files": [f"output/skyreels_v4/clip_{seed:05}_.mp4"]}
        for seed in (1, 2, 3)
    ]  # fmt: skip
    earlier[1]["downloaded"] = ["elsewhere/clip_00002_.mp4"]
    report, folder = tmp_path / "batch.json", tmp_path / "renders"
    report.write_text(json.dumps(earlier))
    with FakeComfy() as server:
        server.prompt_ids += ["p1", "p2"]  # p3 was lost to a restart
        code, out, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--seeds",
                                "1-3", "--resume", str(report), "--report", str(report),
                                "--download", str(folder))  # fmt: skip
    assert (code, err, server.posted) == (0, "", [])
    assert out == [
        "queued 1/3 (done before, to download) p1: 8.seed=1",
        "skipped 2/3 (done before) p2: 8.seed=2",
        "skipped 3/3 (done before) p3: 8.seed=3",
        f"done 1/3 p1: {folder / 'clip_00001_.mp4'}",
    ]
    assert (folder / "clip_00001_.mp4").read_bytes() == b"clip_00001_.mp4|skyreels_v4|output"
    records = json.loads(report.read_text())
    assert records[0] == earlier[0] | {"downloaded": [str(folder / "clip_00001_.mp4")]}
    assert records[1:] == earlier[1:]


def test_resume_with_download_queues_a_failed_render_again(capsys, tmp_path):
    """--download takes over only the renders done but never downloaded: a failed one, never
    downloaded either, whose prompt the server still lists is queued again, not waited for
    under its old prompt id (which would report the failure again)."""
    report, folder = tmp_path / "batch.json", tmp_path / "renders"
    report.write_text(json.dumps([{"prompt_id": "p101", "widgets": {"8.seed": 1},
                                   "status": "failed", "files": [], "error": "out of memory"}]))  # fmt: skip
    with FakeComfy() as server:
        server.prompt_ids.append("p101")
        code, out, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--seeds",
                                "1", "--resume", str(report), "--download", str(folder))  # fmt: skip
    assert (code, err, _seeds_posted(server)) == (0, "", [1])
    assert out == ["queued 1/1 p1: 8.seed=1", f"done 1/1 p1: {folder / 'clip_00001_.mp4'}"]


def test_a_batch_of_files_stopped_while_queueing_names_the_files_it_never_queued(
    capsys, tmp_path, monkeypatch
):
    """The renders never queued keep their local file in the report: a resumed batch finds a
    render with --inputs by its local file, not by the name in its file widget."""
    clips, report = tmp_path / "clips", tmp_path / "batch.json"
    clips.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (clips / name).write_bytes(name.encode())
    widget = f"{_node_ids(VIDEO_TO_AUDIO)['Source clip']}.file"
    _stop_queueing_at_the_second(monkeypatch, CONNECTION_RESET)
    with FakeComfy() as server:
        code, _, _ = _queue(capsys, str(VIDEO_TO_AUDIO), "--server", server.url, "--inputs",
                            str(clips), "--report", str(report))  # fmt: skip
    assert code == 2
    assert json.loads(report.read_text()) == [
        {"prompt_id": "p1", "widgets": {widget: "a.mp4"}, "status": "queued", "files": [],
         "input": str(clips / "a.mp4")},
        {"prompt_id": None, "widgets": {widget: "b.mp4"}, "status": "not queued", "files": [],
         "input": str(clips / "b.mp4")},
    ]  # fmt: skip


def test_a_resumed_batch_stopped_again_loses_no_earlier_record(capsys, tmp_path, monkeypatch):
    """Ctrl-C while queueing the second render queued again: the report holds the first one
    queued, the one done before, the earlier record of the render it never reached, and last the
    record of a seed this run does not ask for."""
    failed = [
        {"prompt_id": f"p{100 + seed}", "widgets": {"8.seed": seed}, "status": "failed",
         "files": [], "error": "out of memory"}
        for seed in (1, 3)
    ]  # fmt: skip
    done = {"prompt_id": "p102", "widgets": {"8.seed": 2}, "status": "done",
            "files": ["output/skyreels_v4/clip_00102_.mp4"]}  # fmt: skip
    other_seed = {"prompt_id": "p120", "widgets": {"8.seed": 20}, "status": "failed",
                  "files": [], "error": "out of memory"}  # fmt: skip
    report = tmp_path / "batch.json"
    report.write_text(json.dumps([failed[0], done, failed[1], other_seed]))
    _stop_queueing_at_the_second(monkeypatch, KeyboardInterrupt())
    with FakeComfy() as server:
        code, _, _ = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--seeds", "1-3",
                            "--resume", str(report), "--report", str(report))  # fmt: skip
    assert code == 130
    assert json.loads(report.read_text()) == [
        {"prompt_id": "p1", "widgets": {"8.seed": 1}, "status": "queued", "files": []},
        done,
        failed[1],
        other_seed,  # a render this run does not ask for: after those it does
    ]


def test_resume_finds_a_file_by_its_local_path_and_uploads_only_what_it_queues(
    capsys, tmp_path, monkeypatch
):
    """The record's file widget holds the server's name for the upload ("a (1).mp4"); the
    render is found by its local file, here named relative to another folder than the first run
    named it. The file whose renders are all done is not uploaded again."""
    clips, report = tmp_path / "clips", tmp_path / "batch.json"
    clips.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (clips / name).write_bytes(name.encode())
    clip = _node_ids(VIDEO_TO_AUDIO)["Source clip"]
    with FakeComfy() as server:
        server.inputs["a.mp4"] = b"someone else's a.mp4"
        server.gone.add("clip_00002_.mp4")  # b's render, moved off the server before download
        code, _, _ = _queue(capsys, str(VIDEO_TO_AUDIO), "--server", server.url, "--inputs",
                            str(clips), "--download", str(tmp_path), "--report",
                            str(report))  # fmt: skip
        assert code == 1
        monkeypatch.chdir(tmp_path)
        server.paths.clear()
        code, out, err = _queue(capsys, str(VIDEO_TO_AUDIO), "--server", server.url, "--inputs",
                                "clips", "--download", ".", "--resume", str(report), "--report",
                                str(report))  # fmt: skip
    assert (code, err, server.paths.count("/upload/image")) == (0, "", 1)
    assert out == [
        f"uploaded {Path('clips', 'b.mp4')} as input/b.mp4",
        f"skipped 1/2 (done before) p1: {clip}.file='a (1).mp4'",
        f"queued 2/2 p3: {clip}.file='b.mp4'",
        "done 2/2 p3: clip_00003_.mp4",
    ]
    first, second = json.loads(report.read_text())
    assert (first["input"], first["status"]) == (str(clips / "a.mp4"), "done")
    assert (second["input"], second["status"]) == (str(Path("clips", "b.mp4")), "done")


def test_a_resumed_batch_finds_its_renders_whatever_the_order_of_its_set_flags(capsys, tmp_path):
    """The report saved again by Notepad (with a byte-order mark) and the batch typed again with
    its --set flags in another order: the render done is still found by the widgets it sets,
    not rendered twice."""
    report = tmp_path / "batch.json"
    sets = ["--set", "8.steps=4", "--set", "Negative prompt.prompt=blurry"]
    batch = [str(TEXT_TO_VIDEO), "--seeds", "1", "--wait", "--report", str(report)]
    with FakeComfy() as server:
        assert _queue(capsys, *batch, *sets, "--server", server.url)[0] == 0
        report.write_text(report.read_text(), encoding="utf-8-sig")
        code, out, err = _queue(capsys, *batch, *sets[2:], *sets[:2], "--server", server.url,
                                "--resume", str(report))  # fmt: skip
    assert (code, err, _seeds_posted(server)) == (0, "", [1])
    assert out == ["skipped 1/1 (done before) p1: 8.steps=4, 6.prompt='blurry', 8.seed=1"]


def test_a_resumed_batch_with_more_seeds_queues_only_the_new_ones(capsys, tmp_path):
    """--seeds widened on resume: the seeds the earlier report lacks are queued; the one done
    there is skipped, and without --download not taken over to fetch its files, though the
    server still holds it and it was never downloaded."""
    report = tmp_path / "batch.json"
    with FakeComfy() as server:
        code, _, _ = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--seeds", "1",
                            "--wait", "--report", str(report))  # fmt: skip
        assert code == 0
        earlier = json.loads(report.read_text())
        server.paths.clear()
        code, out, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--seeds",
                                "1-3", "--wait", "--resume", str(report), "--report",
                                str(report))  # fmt: skip
    assert (code, err, _seeds_posted(server)) == (0, "", [1, 2, 3])
    assert out == [
        "skipped 1/3 (done before) p1: 8.seed=1",
        "queued 2/3 p2: 8.seed=2",
        "queued 3/3 p3: 8.seed=3",
        *(f"done {n}/3 p{n}: output/skyreels_v4/clip_{n:05}_.mp4" for n in (2, 3)),
    ]
    assert "/history/p1" not in server.paths
    records = json.loads(report.read_text())
    assert records[0] == earlier[0] and [r["status"] for r in records] == ["done"] * 3


def test_records_alike_go_to_the_renders_alike_in_turn(capsys, tmp_path):
    """A file given twice renders twice; resumed, its records go to its renders in the order the
    report lists them: the first, done, is skipped, the second, failed, queued again, and the
    new report keeps that order."""
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"a clip")
    widget = f"{_node_ids(VIDEO_TO_AUDIO)['Source clip']}.file"
    done = {"prompt_id": "p101", "widgets": {widget: "a.mp4"}, "status": "done",
            "files": ["output/clip_00101_.mp4"], "input": str(clip)}  # fmt: skip
    failed = {"prompt_id": "p102", "widgets": {widget: "a.mp4"}, "status": "failed",
              "files": [], "error": "out of memory", "input": str(clip)}  # fmt: skip
    report = tmp_path / "batch.json"
    report.write_text(json.dumps([done, failed]))
    with FakeComfy() as server:
        code, out, err = _queue(capsys, str(VIDEO_TO_AUDIO), "--server", server.url, "--inputs",
                                str(clip), str(clip), "--resume", str(report), "--report",
                                str(report))  # fmt: skip
    assert (code, err, len(server.posted)) == (0, "", 1)
    assert out[-2:] == [
        f"skipped 1/2 (done before) p101: {widget}='a.mp4'",
        f"queued 2/2 p1: {widget}='a.mp4'",
    ]
    assert json.loads(report.read_text()) == [
        done,
        {"prompt_id": "p1", "widgets": {widget: "a.mp4"}, "status": "queued", "files": [],
         "input": str(clip)},
    ]  # fmt: skip


@pytest.mark.parametrize(
    "content, problem",
    [(None, "cannot read REPORT (No such file or directory)"),
     ("done: 3", "cannot read REPORT (not JSON: Expecting value: line 1 column 1 (char 0))"),
     ('{"renders": []}', "REPORT is not a list of render records"),
     ('[{"status": "done"}]', "REPORT is not a list of render records"),
     ('[{"prompt_id": null, "widgets": {}, "status": 1, "files": []}]',
      "REPORT is not a list of render records"),
     ('[{"widgets": {}, "status": "done", "files": []}]', "REPORT is not a list of render records"),
     ('[{"prompt_id": null, "widgets": {}, "status": "done", "files": "a.mp4"}]',
      "REPORT is not a list of render records"),
     ('[{"prompt_id": null, "widgets": {}, "status": "done", "files": [], "input": 1}]',
      "REPORT is not a list of render records")],
)  # fmt: skip
def test_a_resume_file_that_is_no_report_is_one_line(capsys, tmp_path, content, problem):
    report = tmp_path / "batch.json"
    if content is not None:
        report.write_text(content)
    with FakeComfy() as server:
        code, _, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--resume",
                              str(report), "--report", str(report))  # fmt: skip
    assert (code, server.paths) == (2, [])
    assert err == (
        f"error: --resume: {problem.replace('REPORT', str(report))}. Fix: pass the JSON file an "
        "earlier run's --report wrote\n"
    )
    assert (report.read_text() if report.exists() else None) == content


def test_an_unreachable_server_still_gets_a_report_and_a_resumed_one_is_left_as_it_was(
    capsys, tmp_path
):
    """A UI workflow's renders cannot be listed without the server's node list: the report is
    one record, not queued, saying why, not the previous batch's report left under the name.
    Resumed (an API workflow's first question is then which prompts the server still holds),
    the earlier report stays as it was, and another --report file gets its records."""
    with FakeComfy() as server:
        url = server.url  # closed again on exit: nothing listens there now
    report, other = tmp_path / "batch.json", tmp_path / "other.json"
    report.write_text("the previous batch's report")
    code, _, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", url, "--seeds", "1-2",
                          "--report", str(report))  # fmt: skip
    problem = err.removeprefix("error: --server: ").partition(". Fix:")[0]
    assert code == 2 and problem.startswith(f"cannot reach ComfyUI at {url}")
    assert json.loads(report.read_text()) == [
        {"prompt_id": None, "widgets": {}, "status": "not queued", "files": [],
         "error": f"nothing queued: {problem}"},
    ]  # fmt: skip
    earlier = '[{"prompt_id": "p1", "widgets": {"8.seed": 1}, "status": "failed", "files": []}]'
    report.write_text(earlier)
    api = tmp_path / "api.json"
    api.write_text(json.dumps(ui_to_api(json.loads(TEXT_TO_VIDEO.read_text()), OBJECT_INFO)))
    for workflow, target in ((TEXT_TO_VIDEO, report), (api, report), (TEXT_TO_VIDEO, other)):
        code, _, _ = _queue(capsys, str(workflow), "--server", url, "--seeds", "1-2",
                            "--resume", str(report), "--report", str(target))  # fmt: skip
        assert code == 2 and json.loads(target.read_text()) == json.loads(earlier)
        assert report.read_text() == earlier
    # A dry run writes no report, also when the server does not answer.
    dry = tmp_path / "dry.json"
    code, _, _ = _queue(capsys, str(TEXT_TO_VIDEO), "--server", url, "--seeds", "1-2",
                        "--dry-run", "--report", str(dry))  # fmt: skip
    assert code == 2 and not dry.exists()


def test_a_prompt_listed_twice_is_refused_unless_paired(capsys, tmp_path):
    """A repeated prompt renders the same takes again, as a repeated seed does; with --pair two
    clips may well want one sound."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("rain on a window\n# sounds\nsteps on gravel\n\nrain on a window\n"
                       "steps on gravel\nwind\nsteps on gravel\n")  # fmt: skip
    with FakeComfy() as server:
        code, _, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--prompts",
                              str(prompts))  # fmt: skip
        assert (code, server.paths) == (2, [])
        assert err == (
            f"error: --prompts: {prompts} gives the same prompt on lines 1 and 5; 3, 6 and 8. "
            "Fix: list each once (--seeds gives more takes of one prompt)\n"
        )
        clips = tmp_path / "clips"
        clips.mkdir()
        for name in ("a.mp4", "b.mp4"):
            (clips / name).write_bytes(name.encode())
        prompts.write_text("rain on a window\nrain on a window\n")
        code, out, _ = _queue(capsys, str(VIDEO_TO_AUDIO), "--server", server.url, "--inputs",
                              str(clips), "--prompts", str(prompts), "--pair",
                              "--dry-run")  # fmt: skip
    prompt = _node_ids(VIDEO_TO_AUDIO)["Prompt"]
    assert code == 0
    assert [json.loads(line)[prompt]["inputs"]["prompt"] for line in out] == [
        "rain on a window"
    ] * 2


def test_a_dry_run_makes_no_download_folder_and_empty_seeds_are_refused(capsys, tmp_path):
    with FakeComfy() as server:
        code, out, _ = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--dry-run",
                              "--download", str(tmp_path / "renders"))  # fmt: skip
        assert code == 0 and len(out) == 1 and not (tmp_path / "renders").exists()
        code, _, err = _queue(capsys, str(TEXT_TO_VIDEO), "--server", server.url, "--seeds", "")
    assert code == 2 and err.startswith("error: --seeds:") and server.posted == []


def test_ctrl_c_ends_a_command_with_one_line(capsys, monkeypatch):
    """Ctrl-C printed a 30-line KeyboardInterrupt traceback; the exit code is the shell's 130."""
    from skyreels_core import batch_queue

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(batch_queue, "run", interrupted)
    code, out, err = _queue(capsys, str(TEXT_TO_VIDEO))
    assert (code, out, err) == (130, [], "queue: interrupted\n")
