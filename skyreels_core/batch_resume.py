"""``queue --resume``: a batch run again after a crash, a ``--timeout`` or a few failures renders
only what is not done. Each variant of the new run takes its own record of the earlier
``--report``, found by the widget values it sets and, with ``--inputs``, the local file it
renders: the file widget's value in a record is the server's upload name, which can differ from
the file's own (a second ``take.mp4`` arrives as ``take (1).mp4``)."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import InputError

SKIP, WAIT, QUEUE = "skip", "wait", "queue"  # what a resumed batch does with each variant
# Records whose prompt the server may still hold: taken over under their prompt id, where
# queueing them again would render the take twice.
WAITABLE = ("queued", "unfinished")


def read_report(path: Path) -> list[dict]:
    """The records of an earlier --report; read before this run writes anything, since the same
    file may be its --report."""
    fix = "pass the JSON file an earlier run's --report wrote"
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8-sig"))  # as Notepad saves
    except OSError as error:
        raise InputError("--resume", f"cannot read {path} ({error.strerror})", fix) from None
    except ValueError as error:  # UnicodeDecodeError included
        raise InputError("--resume", f"cannot read {path} (not JSON: {error})", fix) from None
    if not isinstance(records, list) or not all(map(_is_record, records)):
        raise InputError("--resume", f"{path} is not a list of render records", fix)
    return records


def _is_record(record: object) -> bool:
    """Whether ``record`` has the fields every --report record has, which resuming reads (and a
    record taken over keeps)."""
    return (
        isinstance(record, dict)
        and isinstance(record.get("widgets"), dict)
        and isinstance(record.get("status"), str)
        and "prompt_id" in record
        and isinstance(record["prompt_id"], (str, type(None)))
        and isinstance(record.get("files"), list)
        and isinstance(record.get("input", ""), str)
    )


def variant_key(
    widgets: dict[str, object], local_file: str | Path | None, file_widget: str | None
) -> str:
    """One variant as both runs can name it: the widgets it sets and, with --inputs, the local
    file it renders (resolved: ``clips/a.mp4`` and its absolute path are one file) in place of
    ``file_widget``'s value, the upload's name. The JSON form compares values as a report
    holds them."""
    if local_file is not None:
        widgets = {key: value for key, value in widgets.items() if key != file_widget}
        local_file = str(Path(local_file).resolve())
    return json.dumps([widgets, local_file], sort_keys=True, default=str)


def match(
    records: list[dict], keys: list[str], file_widget: str | None
) -> tuple[list[dict | None], list[dict]]:
    """Each variant's earlier record (None where it has none; records alike go to variants
    alike in turn), and the records no variant took that the new report keeps: those of renders
    that reached the server (a narrower --seeds must not lose their files, prompt ids or the
    server's reasons), not the ``not queued`` ones, which hold no render, only a variant this
    run no longer asks for (or a start the server never answered)."""
    by_key: dict[str, list[dict]] = {}
    for record in records:
        key = variant_key(record["widgets"], record.get("input"), file_widget)
        by_key.setdefault(key, []).append(record)
    matched = [by_key[key].pop(0) if by_key.get(key) else None for key in keys]
    taken = {id(record) for record in matched if record is not None}
    kept = [r for r in records if id(r) not in taken and r["status"] != "not queued"]
    return matched, kept


def _takes_over(record: dict | None, downloads: bool) -> bool:
    """Whether ``record``'s prompt is taken over where the server still holds it: one queued
    before, or one done but never downloaded when this run downloads (its files are fetched
    from the server's history, not rendered again)."""
    if record is None or not record["prompt_id"]:
        return False
    never_downloaded = record["status"] == "done" and "downloaded" not in record
    return record["status"] in WAITABLE or (downloads and never_downloaded)


def waitable_ids(matched: list[dict | None], downloads: bool) -> list[str]:
    """The prompt ids to ask the server about: those of the records a resumed run would take
    over."""
    return [record["prompt_id"] for record in matched if _takes_over(record, downloads)]


def step(record: dict | None, known: set[str], downloads: bool) -> str:
    """What to do with a variant: WAIT for one the server still holds (in its history or on its
    queue) that was queued before, or done but not yet downloaded when this run downloads; SKIP
    any other one done before (one the server forgot keeps its record, files not fetched);
    QUEUE any other: refused, failed, incomplete, undownloaded (the server no longer has its
    files), not queued, or forgotten in a restart."""
    if record is None:
        return QUEUE
    if _takes_over(record, downloads) and record["prompt_id"] in known:
        return WAIT
    return SKIP if record["status"] == "done" else QUEUE
