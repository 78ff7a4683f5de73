"""Crash-safe outputs (contracts §6): write into a temporary sibling, fsync, rename into place.

Replacing a non-empty folder renames the old one aside (`OUT.old`), renames the new one in, then
deletes the old; a `.old` left by a crash is recovered (if OUT is missing) or removed next time.

Permissions are what a plain `open()` / `mkdir()` gives under the user's umask (0644 / 0755 under
umask 022), not tempfile's 0600 / 0700: temporaries are created with mode 0o666 / 0o777 through
`os.open` / `os.mkdir`, which the kernel masks with the umask (never read or set here: `os.umask()`
is process-wide). A replaced output is a new file, so it gets fresh permissions, not the old one's.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path
from typing import Callable

from ..errors import InvalidInputError


FILE_MODE, FOLDER_MODE = 0o666, 0o777  # before the umask, as open() and mkdir() ask
_ATTEMPTS = 100  # fresh random names to try before giving up (a collision needs a crowded folder)


def _temp_name(dir_: Path, name: str) -> Path:
    # the `.NAME.tmp-*` pattern is what nanocodec/apps/corpus.py sweeps after a crash
    return dir_ / f".{name}.tmp-{secrets.token_hex(4)}"


def make_temp_folder(parent: Path, name: str) -> Path:
    """A new empty folder beside `name` in `parent`, with mkdir()'s permissions under the umask."""
    for _ in range(_ATTEMPTS):
        tmp = _temp_name(parent, name)
        try:
            os.mkdir(tmp, FOLDER_MODE)
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name for {name} in {parent}")


def open_temp_file(parent: Path, name: str) -> tuple[int, Path]:
    """(fd, path) of a new file beside `name` in `parent`, open for writing, with open()'s permissions."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(_ATTEMPTS):
        tmp = _temp_name(parent, name)
        try:
            return os.open(tmp, flags, FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name for {name} in {parent}")


def fsync_tree(path: Path) -> None:
    for root, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(root)


def _fsync_dir(path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsync'ed
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def recover_leftover(out: Path) -> None:
    """Finish or undo a replacement that a crash interrupted."""
    old = out.with_name(out.name + ".old")
    if old.exists():
        if out.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, out)


def write_folder(out, fill: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Create folder `out` atomically: `fill(tmp)` writes its contents into a temporary sibling."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    recover_leftover(out)
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"output {out} exists and is not a folder; choose another path")
    nonempty = out.is_dir() and any(out.iterdir())
    if nonempty and not overwrite:
        raise InvalidInputError(f"output folder {out} is not empty; pass overwrite=True to replace it")
    tmp = make_temp_folder(parent, out.name)
    try:
        fill(tmp)
        fsync_tree(tmp)
        if out.exists():
            old = out.with_name(out.name + ".old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_file(path, data: bytes) -> Path:
    """Write `data` to `path` atomically (temporary sibling, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = open_temp_file(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
