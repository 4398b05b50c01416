"""Resolving user-supplied file names strictly inside a trusted folder (no path traversal)."""

from __future__ import annotations

import itertools
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath, PureWindowsPath
from typing import TypeVar

from .errors import InputError

UNPORTABLE = re.compile(r'[<>:"/\\|?*\x00-\x1f]')
"""Characters no Windows file name holds (``/`` and ``\\`` separate names there)."""


class NameTaken(InputError):
    """A file exists under the name a writer was to publish: files are never overwritten."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            "output", f"{path} already exists", "choose another name (files are never overwritten)"
        )


class FileInUse(InputError):
    """A file to replace that another program holds open, which Windows refuses to replace: the
    new file is kept beside it instead of lost."""

    def __init__(self, path: Path, kept: Path) -> None:
        super().__init__(
            "output",
            f"{path} is open in another program (a player, or a ComfyUI that loaded it), so it "
            f"cannot be replaced; the new file is {kept.name}",
            f"close that program and move {kept.name} into its place",
        )


def resolve_inside(
    roots: list[Path] | Path,
    name: str,
    input_name: str = "file",
    exists: Callable[[Path], bool] = Path.is_file,
) -> Path:
    """The existing file (or, with ``exists=Path.is_dir``, folder) ``name`` inside one of
    ``roots``; refuses absolute paths and ``..`` escapes.

    UI widgets and API prompts are untrusted text, so a name may only select an entry that
    already lives in the host's model or input folders. Containment is judged on the name, not on
    where links lead: a model kept on another drive and linked into a models folder is the
    machine owner's choice (ComfyUI opens such files too), while the typed text cannot climb out.
    """
    roots = [roots] if isinstance(roots, Path) else roots
    # Judged in both flavours, so a workflow shared from Linux cannot reach C:\ on Windows
    # ("\\secret" and "D:x" are relative there, yet ``root / name`` leaves ``root``).
    flavours: list[PurePath] = [Path(name), PureWindowsPath(name)]
    plain = all(path.parts and not (path.drive or path.root) for path in flavours)
    if not name or "\x00" in name or not plain:
        raise InputError(
            input_name, f"{name!r} is not a plain file name", "pick a file from the list"
        )
    if any(".." in path.parts for path in flavours):
        folders = ", ".join(str(root) for root in roots)
        raise InputError(
            input_name, f"{name!r} points outside {folders}", "pick a file inside that folder"
        )
    for root in roots:
        candidate = root.absolute() / name
        if exists(candidate):
            return candidate
    folders = ", ".join(str(root) for root in roots)
    raise InputError(input_name, f"{name!r} was not found", f"put the file into {folders}")


def output_folder(path: Path, input_name: str) -> Path:
    """``path`` as a folder to write into, created if missing. Commands call it before their
    work, so a result never ends up with nowhere to go."""
    if path.exists() and not path.is_dir():
        raise InputError(input_name, f"{path} is a file", "name a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(
            input_name, f"cannot create {path} ({error.strerror})", "name a folder you can write to"
        ) from None
    return path


def output_file(
    path: str | Path,
    input_name: str,
    example: str,
    *,
    refuse_existing: bool = False,
    suffix: str | None = None,
) -> Path:
    """``path`` as a file a command writes once its work is done, checked before the work, so
    minutes of rendering never end in IsADirectoryError or PermissionError: not a folder (nor a
    name ending in "/", which ``Path`` would quietly drop), and in a folder that exists or can be
    made and takes a new file. Only trying tells the last (root's ``os.access`` says yes where
    sysfs says no), so one partial file is created and removed there, as :func:`published` will.
    ``refuse_existing`` is for commands with an ``--overwrite`` flag that was not given;
    ``suffix`` for files players open by their name (MP4 bytes under .gif open nowhere)."""
    text, path = str(path), Path(path)
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise InputError(
            input_name, f"{text} names a folder", f"name a file, e.g. {path / example}"
        )
    if suffix is not None and path.suffix.lower() != suffix:
        raise InputError(
            input_name, f"{text} does not end in {suffix}", f"name it {path.with_suffix(suffix)}"
        )
    if refuse_existing and path.exists():
        raise InputError(
            input_name, f"{path} already exists", "choose another path or pass --overwrite"
        )
    folder = output_folder(path.parent, input_name)
    try:
        _new_partial(path).unlink()
    except OSError as error:
        raise InputError(
            input_name,
            f"cannot write into {folder} ({error.strerror})",
            "name a folder you can write to",
        ) from None
    return path


PARTIAL_TOKEN_BYTES = 4
PARTIAL_NAME_EXTRA = len("...part") + 2 * PARTIAL_TOKEN_BYTES  # ".{stem}.{token}{suffix}.part"


def _new_partial(path: Path) -> Path:
    """An empty file of a fresh name beside ``path``, created with the umask's permissions."""
    while True:
        token = secrets.token_hex(PARTIAL_TOKEN_BYTES)
        partial = path.with_name(f".{path.stem}.{token}{path.suffix}.part")
        try:
            os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return partial


@contextmanager
def published(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """A partial file of its own beside ``path`` to write into, published under ``path`` once the
    write is done: an interrupted write never leaves a truncated file under the real name, and
    two writers never share a partial file. Without ``overwrite`` it is linked into place, which
    fails rather than replace a file that exists, even one another run wrote meanwhile. The
    file gets the permissions the umask gives (a temporary file's 0600 would hide renders from
    the rest of a shared disk), also where a writer replaces the partial file with one of its
    own (safetensors' save_file leaves it 0600)."""
    partial = _new_partial(path)
    mode = partial.stat().st_mode
    try:
        yield partial
        os.chmod(partial, mode)
        if overwrite:
            _replace(partial, path)
        else:
            _publish_new(partial, path)
    except FileExistsError:
        raise NameTaken(path) from None
    finally:
        partial.unlink(missing_ok=True)


def _replace(partial: Path, path: Path) -> None:
    """``partial`` over ``path``; where another program holds ``path`` open (Windows refuses to
    replace such a file), under the first free "name (new N)" beside it, named in the error."""
    try:
        os.replace(partial, path)
    except PermissionError:
        if not path.is_file():  # the folder itself refuses: a true denial
            raise

        def keep(name: Path) -> Path:
            try:
                _publish_new(partial, name)
            except FileExistsError:
                raise NameTaken(name) from None
            return name

        names = (path.with_name(f"{path.stem} (new {n}){path.suffix}") for n in itertools.count(1))
        raise FileInUse(path, under_a_free_name(keep, names)) from None


def write_json(path: Path, value: object, input_name: str) -> None:
    """``value`` as indented JSON, published whole over the file before it: a full disk or a
    second Ctrl-C mid-write leaves the old file (a report, a bundle's manifest), never a
    truncated one under its name."""
    try:
        with published(path, overwrite=True) as partial:
            partial.write_text(json.dumps(value, indent=2, default=str) + "\n")
    except OSError as error:
        raise InputError(
            input_name, f"cannot write {path} ({error.strerror})", "free space or pick another path"
        ) from None


Written = TypeVar("Written")


def under_a_free_name(write: Callable[[Path], Written], names: Iterator[Path]) -> Written:
    """``write`` under the first of ``names`` still free when the file is published: a name
    another process takes meanwhile (a second ComfyUI saving into the same output folder, a
    second batch downloading into the same folder) is passed over, where the render would have
    been lost to "already exists". ``names`` is endless."""
    while True:
        path = next(names)
        try:
            return write(path)
        except NameTaken:
            continue


def _publish_new(partial: Path, path: Path) -> None:
    """``partial`` under the name ``path``, which must not exist. A hard link is atomic; where the
    filesystem has none (exFAT and FAT drives, Google Drive and rclone mounts), the name is
    claimed by creating it exclusively, then the finished file replaces that empty claim."""
    try:
        os.link(partial, path)
    except FileExistsError:
        raise
    except OSError:  # EPERM, ENOTSUP, EINVAL by filesystem; a true denial recurs just below
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        try:
            os.replace(partial, path)
        except BaseException:  # an empty claim would stay under the name, the number spent
            path.unlink(missing_ok=True)
            raise


def fingerprint(paths: list[Path]) -> str:
    """Names, sizes and modification times of the files (a folder counts as all its files): cheap
    to compute on every queue, and it changes when a file is replaced under the same name."""
    files = sorted(
        file for path in paths for file in (path.rglob("*") if path.is_dir() else [path])
    )
    return ";".join(
        f"{file}:{stat.st_size}:{stat.st_mtime_ns}"
        for file in files
        if file.is_file() and (stat := file.stat())
    )
