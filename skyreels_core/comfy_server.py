"""The few endpoints of ComfyUI's HTTP API a batch needs (``python -m skyreels_core queue``):
queue a prompt, upload an input, wait for a render through its history, download what it saved.
Every failure becomes an :class:`InputError` naming ``--server`` (or the file or value at fault),
and the reads a batch repeats ride out a proxy's or a busy server's passing fault."""

from __future__ import annotations

import itertools
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.client import HTTPException
from pathlib import Path

from .errors import InputError
from .file_kinds import AV_LATENT_SUFFIX
from .paths import UNPORTABLE, published, under_a_free_name

UPLOAD_PATH = "/upload/image"  # the frontend's upload route, for every file type
# How ComfyUI refuses one upload, and the fix: a name it will not save (400), a file over its
# --max-upload-size (413, from its web server). Any other error is not about that one file.
UPLOAD_REFUSALS = {
    400: "check the file's name",
    413: "start ComfyUI with a larger --max-upload-size (MB)",
}
# While renders are awaited (history, queue and download reads, which repeat safely), a server
# that drops a connection or answers through a proxy's 502/503/504 is asked again after these
# pauses before the batch ends: a long batch outlives a reverse proxy's or a busy server's
# hiccup. Queueing and uploads are never repeated (the first may have landed), and the first
# contact is not either, so a wrong --server is named at once.
WAIT_RETRY_PAUSES_S = (2.0, 5.0, 10.0, 20.0)
QUEUE_CHECK_EVERY = 10  # polls of a render's history per look at the whole queue (MBs when long)
TRANSIENT_HTTP = (502, 503, 504)


class ServerUnreachable(InputError):
    """No answer, a reply cut short or a gateway's 502/503/504: possibly a passing fault."""


class PromptRefused(InputError):
    """The server refused one prompt (a value its node does not accept): that render is
    reported and the batch goes on, where any other error stops it."""


class DownloadMissing(InputError):
    """The server no longer has one finished render's file (moved or deleted from its output
    folder before the download): that render is reported undownloaded and the batch goes on."""


class UploadRefused(InputError):
    """The server refused one --inputs file's upload (see UPLOAD_REFUSALS): the renders of that
    file are reported refused and the batch goes on with the other files."""


class ComfyServer:
    """The few endpoints of ComfyUI's HTTP API a batch needs."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        try:
            parts = urllib.parse.urlsplit(url)
            fine = parts.scheme in ("http", "https") and parts.hostname and (parts.port or 1)
        except ValueError:  # "http://[::1", a port that is no number
            fine = False
        if not fine:
            raise InputError(
                "--server", f"{url!r} is not an http(s) address", "pass --server http://HOST:PORT"
            )
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.client_id = uuid.uuid4().hex

    def _request(
        self,
        path: str,
        body: dict | None = None,
        raw: bool = False,
        form: tuple[bytes, str] | None = None,
        retry: bool = False,
    ):
        """GET, or POST ``body`` as JSON or ``form`` as (multipart bytes, its content type);
        a GET with ``retry`` is asked again after WAIT_RETRY_PAUSES_S while the server seems
        unreachable."""
        data, content_type = form or (None, "application/json")
        if body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": content_type}
        )
        pauses = WAIT_RETRY_PAUSES_S if retry and data is None else ()
        for pause in pauses:
            try:
                answer = self._send(request, path)
                break
            except ServerUnreachable as error:
                print(f"{error.problem}; asking again in {pause:g} s", file=sys.stderr)
                time.sleep(pause)
        else:  # no retries, or every one failed: the last try's error is the batch's
            answer = self._send(request, path)
        return answer if raw else self._json(path, answer)

    def _send(self, request: urllib.request.Request, path: str) -> bytes:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            if path == "/prompt" and error.code == 400:
                raise PromptRefused("workflow", _refusal(error), "fix the value it names") from None
            if path.startswith("/view?") and error.code == 404:
                raise DownloadMissing(
                    "--download", "gone from the server (HTTP 404)", "render it again"
                ) from None
            if path == UPLOAD_PATH and error.code in UPLOAD_REFUSALS:
                reason = f"HTTP {error.code} {error.reason}"
                text = error.read().decode(errors="replace").strip()[:200].rstrip(".")
                if text and not text.startswith("<"):  # a proxy's HTML page says no more
                    reason += f": {text}"
                raise UploadRefused("--inputs", reason, UPLOAD_REFUSALS[error.code]) from None
            kind = ServerUnreachable if error.code in TRANSIENT_HTTP else InputError
            raise kind(
                "--server",
                f"{self.url}{path} answered HTTP {error.code}",
                "check that --server names a ComfyUI server",
            ) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, HTTPException) as error:
            reason = getattr(error, "reason", None) or type(error).__name__  # a cut-off reply
            raise ServerUnreachable(
                "--server",
                f"cannot reach ComfyUI at {self.url} ({reason})",
                "start ComfyUI or pass --server http://HOST:PORT",
            ) from None

    def _json(self, path: str, answer: bytes):
        """The answer's JSON; a login page or another service at the address answers HTML."""
        try:
            return json.loads(answer)
        except ValueError:
            raise InputError(
                "--server",
                f"{self.url}{path} did not answer JSON",
                "check that --server names a ComfyUI server",
            ) from None

    def _field(self, path: str, answer: object, key: str):
        """``answer[key]``; another service at the address may answer JSON without it, which
        is shown instead of a KeyError."""
        if isinstance(answer, dict) and key in answer:
            return answer[key]
        shown = json.dumps(answer)
        shown = shown if len(shown) <= 200 else shown[:200] + "..."
        raise InputError(
            "--server",
            f"{self.url}{path} answered {shown} with no {key!r}",
            "check that --server names a ComfyUI server",
        )

    def object_info(self) -> dict:
        return self._request("/object_info")

    def upload(self, path: Path) -> str:
        """Copy a local file into the server's input folder as the frontend's upload button does
        (any file type goes through /upload/image); returns the name a widget selects it by. The
        server keeps an identical file already there and numbers a different one of the same
        name ("clip (1).mp4"), so nothing on the server is overwritten."""
        boundary = uuid.uuid4().hex
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="type"\r\n\r\ninput\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        )
        try:
            content = path.read_bytes()
        except OSError as error:
            raise InputError(
                "--inputs", f"cannot read {path} ({error.strerror})", "check the file"
            ) from None
        data = head.encode() + content + f"\r\n--{boundary}--\r\n".encode()
        form = (data, f"multipart/form-data; boundary={boundary}")
        answer = self._request(UPLOAD_PATH, form=form)
        name = self._field(UPLOAD_PATH, answer, "name")
        return "/".join(part for part in (answer.get("subfolder"), name) if part)

    def queue(self, prompt: dict, workflow: dict | None = None) -> tuple[str, str | None]:
        """Queue one API prompt: its prompt id, and what the server dropped of it (None when
        nothing). The server queues a prompt while one of its outputs is valid and drops the
        others, naming them in ``node_errors`` of its answer. ``workflow`` (UI format) rides
        along as the metadata the frontend would attach."""
        body = {"prompt": prompt, "client_id": self.client_id}
        if workflow is not None:
            body["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        answer = self._request("/prompt", body)
        return self._field("/prompt", answer, "prompt_id"), _node_problem(answer)

    def wait(
        self, prompt_id: str, poll_s: float = 1.0, deadline: float | None = None
    ) -> dict | None:
        """The prompt's history entry once it has finished, successfully or not; a prompt taken
        off the queue before it ran (cancelled), or lost when the server restarted, never gets
        one, so it reads as failed (the two look alike to a client). None when ``deadline`` (a
        time.monotonic() value) passes first."""
        for poll in itertools.count():
            entry = self._history(prompt_id)
            if entry is not None:
                return entry
            left = None if deadline is None else deadline - time.monotonic()
            due = left is not None and left <= 0  # the last look: "unfinished" means queued
            if (due or poll % QUEUE_CHECK_EVERY == 0) and not self._on_queue(prompt_id):
                # Finished between the two reads, or removed from the queue.
                cancelled = {"status_str": "error", "messages": [["execution_cancelled", {}]]}
                return self._history(prompt_id) or {"status": cancelled, "outputs": {}}
            if due:
                return None
            time.sleep(poll_s if left is None else min(poll_s, left))

    def _on_queue(self, prompt_id: str) -> bool:
        return prompt_id in self._queued_ids(retry=True)

    def _queued_ids(self, retry: bool) -> set[str]:
        queue = self._request("/queue", retry=retry)
        return {item[1] for item in queue.get("queue_running", []) + queue.get("queue_pending", [])}

    def known(self, prompt_ids: list[str]) -> set[str]:
        """Those of ``prompt_ids`` the server still holds, on its queue or in its history (the
        queue read first: a prompt finishing meanwhile is in the history by then). A restart
        forgets both, and a prompt forgotten renders only if queued again. The queue is read
        also for no ids, and never asked again: for an API workflow resumed this is the first
        contact, before anything is uploaded or queued."""
        queued = self._queued_ids(retry=False)
        return {
            prompt_id
            for prompt_id in prompt_ids
            if prompt_id in queued
            or self._request(f"/history/{prompt_id}").get(prompt_id) is not None
        }

    def download(self, item: dict, folder: Path) -> Path:
        """Fetch one saved file (an item of a history entry's outputs) through ``/view`` into
        ``folder``, under its own name or, where that is taken, the first free ``name_N``: a
        batch never overwrites a file, and a failed transfer leaves no partial one."""
        where = {"subfolder": item.get("subfolder", ""), "type": item.get("type", "output")}
        query = urllib.parse.urlencode({"filename": item["filename"], **where})
        data = self._request(f"/view?{query}", raw=True, retry=True)
        name = portable_name(Path(item["filename"]).name)
        # a take's whole suffix is kept, so Load AV Latent still lists a numbered one
        suffix = AV_LATENT_SUFFIX if name.endswith(AV_LATENT_SUFFIX) else Path(name).suffix
        numbered = (
            folder / (name if number == 0 else f"{name.removesuffix(suffix)}_{number}{suffix}")
            for number in itertools.count()
        )

        def write(target: Path) -> Path:
            with published(target) as partial:
                partial.write_bytes(data)
            return target

        try:
            return under_a_free_name(write, (path for path in numbered if not path.exists()))
        except OSError as error:
            raise InputError(
                "--download",
                f"cannot write into {folder} ({error.strerror})",
                "free space or pick DIR",
            ) from None

    def _history(self, prompt_id: str) -> dict | None:
        entry = self._request(f"/history/{prompt_id}", retry=True).get(prompt_id)
        status = (entry or {}).get("status", {})
        finished = status.get("completed") is not None or status.get("status_str") == "error"
        return entry if finished else None


def portable_name(name: str) -> str:
    """A server's file name as every system can hold it: a Linux server may save a name with
    characters (or a trailing dot or space) Windows refuses, which stopped a batch's downloads."""
    return UNPORTABLE.sub("_", name).rstrip(" .") or "_"


def _refusal(error: urllib.error.HTTPError) -> str:
    """The server's reason for refusing a prompt, as one line."""
    try:
        body = json.loads(error.read())
    except ValueError:
        return "the server refused the prompt"
    message = (body.get("error") or {}).get("message", "no reason given")
    return _node_problem(body) or f"the server refused the prompt: {message}"


def _node_problem(answer: dict) -> str | None:
    """The first of a /prompt answer's ``node_errors``, as one line; None if it has none."""
    for node_id, report in (answer.get("node_errors") or {}).items():
        for problem in report.get("errors", []):
            detail = f": {problem['details']}" if problem.get("details") else ""
            return f"node {node_id} ({report.get('class_type')}): {problem['message']}{detail}"
    return None
