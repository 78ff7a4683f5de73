"""Crash-safe outputs (contracts §6): write into a temporary sibling, fsync, rename into place.

Replacing a non-empty folder renames the old one aside (`OUT.old`), renames the new one in, then
deletes the old; a `.old` left by a crash is recovered (if OUT is missing) or removed next time.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from ..errors import InvalidInputError


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
        raise InvalidInputError(f"output folder {out} is not empty; pass --overwrite (overwrite=True) to replace it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
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
