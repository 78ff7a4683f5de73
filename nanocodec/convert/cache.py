"""Converted models cached for `from_pretrained` of a `.nemo` or NeMo-named safetensors (contracts §1).

The conversion is `nanocodec convert`'s own (same code, same safety rules and limits); its output folder
is kept under the cache root, named by what determines its bytes: the source's sha256, the architecture's
config sha256 (NeMo-named safetensors; a .nemo carries its own yaml, covered by its sha256) and the
converter's version. A folder is converted into a private staging folder and renamed into place, so a
cache entry is either complete or absent; when two processes convert the same source at once, the first
rename wins and the other uses the winner's folder.

Root: `cache_dir=` (then `<cache_dir>/nanocodec/converted`), else `$NANOCODEC_CACHE`, else
`$HF_HOME/nanocodec/converted`, HF_HOME defaulting as huggingface_hub's does (`$XDG_CACHE_HOME/huggingface`,
`~/.cache/huggingface`).
"""
from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import sys
from pathlib import Path

from nanocodec.config import NanoCodecConfig
from nanocodec.errors import CheckpointError, InvalidInputError
from nanocodec.fileio.atomic import _fsync_dir

from . import __version__
from .sources import CONFIG_NAME, NEMO, SAFETENSORS, WEIGHTS_NAME, Source

ENV = "NANOCODEC_CACHE"
logger = logging.getLogger("nanocodec")


def hf_home() -> Path:
    """huggingface_hub's HF_HOME rule, read at call time (its constants are fixed when it is imported)."""
    default = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return Path(os.environ.get("HF_HOME") or default).expanduser()


def cache_root(cache_dir=None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser() / "nanocodec" / "converted"
    if os.environ.get(ENV):
        return Path(os.environ[ENV]).expanduser()
    return hf_home() / "nanocodec" / "converted"


def cache_key(source: Source, config: NanoCodecConfig | None) -> str:
    arch = config.sha256()[:16] if config is not None else "nemo"
    return f"{source.sha256()}-{arch}-converter{__version__}"


def complete(folder: Path) -> bool:
    return (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()


def converted_folder(source: Source, preset: str | NanoCodecConfig | None, root: Path) -> Path:
    """The cached conversion of `source` (converted now if absent): a folder in nanocodec's layout."""
    from .converter import architecture, convert_source

    config = None
    if source.kind == SAFETENSORS:
        config, _notes = architecture(source, preset)  # before any work: an ambiguity fails here
    elif source.kind == NEMO and preset is not None:
        raise InvalidInputError(f"{source.label} is a .nemo: its own model_config.yaml gives the architecture; pass no preset")
    final = root / cache_key(source, config)
    if complete(final):
        logger.debug("nanocodec: %s: using the cached conversion %s", source.label, final)
        return final
    if final.exists():
        raise CheckpointError(f"{final} is an incomplete cache entry (not written by nanocodec); delete it and load again")
    staging = _staging(root, final.name)
    try:
        report = convert_source(source, staging / "model", preset=preset)
        try:
            os.rename(staging / "model", final)
        except OSError as e:
            # another process renamed its conversion into place first: the same bytes, use it
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not complete(final):
                raise
            logger.debug("nanocodec: %s: another process cached %s first; using it", source.label, final)
            return final
        _fsync_dir(root)
    except OSError as e:
        raise InvalidInputError(f"could not write the converted model under {root}: {e}; set {ENV} (or pass cache_dir=) "
                                "to a writable folder") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    announce(f"nanocodec: converted {source.label} ({_what(source, report)}) to nanocodec's layout; cached in {final}")
    return final


def announce(message: str) -> None:
    """One INFO line on the 'nanocodec' logger; printed to stderr when logging is not set up at all, so
    that a first (slower) load says what it did."""
    logger.info(message)
    if not logger.hasHandlers():
        print(message, file=sys.stderr)


def _what(source: Source, report) -> str:
    if source.kind == NEMO:
        return f".nemo, sha256 {report.source_sha256[:12]}, NeMo {report.nemo_version or 'version unknown'}"
    return f"{SAFETENSORS}, sha256 {report.source_sha256[:12]}; " + "; ".join(report.config_notes)


def _staging(root: Path, name: str) -> Path:
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = root / f".{name[:24]}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        os.mkdir(staging, 0o777)  # permissions as the umask gives (contracts §6)
    except OSError as e:
        raise InvalidInputError(f"could not create the converted-model cache {root}: {e}; set {ENV} (or pass "
                                "cache_dir=) to a writable folder") from None
    return staging
