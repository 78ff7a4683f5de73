"""Tokenize a corpus: every audio file under a folder -> token shards + `manifest.jsonl`, incrementally.

Layout of OUT_DIR:
    tokenize.json               the settings the folder is bound to (model, config sha256, dtype, TF32,
                                shard size), the next unused shard index, the last run's precision record
    shard-000000.safetensors    one token file per shard (nanocodec/fileio/token_files.py), keyed by path;
                                its header also names every item's sha256 and duration and the shard's
                                unreadable files: a shard describes itself
    manifest.jsonl              one line per tokenized file:
        {"path", "sha256", "duration_s", "num_samples", "frames", "shard", "key"}
    errors.jsonl                one line per file that could not be read: {"path", "sha256", "shard", "error"}

Incremental (contracts §6): what a file's shard is, is recorded (the shards and the manifest are the
assignment) and never recomputed from the file list. A run compares the corpus with it:
- new files (not assigned) are sorted by path and cut into groups of `shard_size`, which become new
  shards at indices never used before: existing shards are not touched;
- a shard holding a changed file (its sha256 differs) is rewritten under its own name: the changed
  files are re-encoded, the unchanged items' tokens copied from the old shard, not re-encoded;
- a deleted file is dropped from its shard (rewritten, tokens copied) and from the manifest; a shard
  left with no files is deleted, and its index stays used (`next_shard` in tokenize.json);
- every other shard is kept as it is, byte for byte (same inode).
The same sequence of runs on the same inputs gives the same bytes (no timestamps; see below for batching).

Crash safety and resume: a shard is written (temporary sibling, fsync, rename) before its manifest
lines, and it describes itself, so it is committed the moment it is renamed in: a later run rebuilds
the manifest and error log from the shards (a torn or missing line costs nothing). A group that was
planned but not committed is re-planned on the next run, into the lowest free indices from
`next_shard` on, so a resumed run writes what an uninterrupted one writes. A shard listed in the
manifest whose file is gone is redone under its name. Folders written by format 1 (shards that do not
describe themselves) migrate: their shards are trusted where the manifest lists exactly their keys and
are rewritten in the new form only when one of their files changes.

Batching: inside a shard, the files to encode are batched by length (sorted by the duration their
headers give, then path; only one batch of audio is in memory at a time). The model's ragged `encode`
is batch-invariant, so every item gets its solo tokens (contracts §5: up to rare boundary flips).

Engines: `tokenize` runs everything in this process. nanocodec/apps/ray_engine.py (`--engine ray`) runs the
same pieces on a Ray cluster: `open_output`, `locked` and `plan` on the driver, `shard_batches`,
`load_batch` and `encode_items` in Ray workers, `commit_shard` and `finish` on the driver again;
so both write the same bytes, and either can resume the other's output folder. Both run the model
under the one precision policy (nanocodec/precision.py) and record its settings in tokenize.json and in
every shard.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
import torch

from .. import precision
from ..fileio import atomic, audio, token_files
from . import DEFAULT_BATCH_SIZE, DEFAULT_SHARD_SIZE  # noqa: F401  (re-exported: corpus.DEFAULT_*)
from ..errors import InvalidInputError

MANIFEST = "manifest.jsonl"
ERRORS = "errors.jsonl"
STATE = "tokenize.json"
LOCK = ".tokenize.lock"
SHARD_PATTERN = "shard-{:06d}.safetensors"
_SHARD_NAME = re.compile(r"shard-(\d{6,})\.safetensors")
STATE_FORMAT = "nanocodec-tokenize"
STATE_VERSION = 2  # 1: fixed groups of the sorted file list, shards without their own item records
_UNBOUND = ("next_shard", "precision")  # tokenize.json keys a run updates instead of checking
MANIFEST_FIELDS = ("path", "sha256", "duration_s", "num_samples", "frames", "shard", "key")
ERROR_FIELDS = ("path", "sha256", "shard", "error")
# shard header keys (token-file metadata) that make a shard describe itself
SOURCES_KEY, ERRORS_KEY = "sources", "errors"
# every container libsndfile knows, plus the usual aliases
AUDIO_EXTENSIONS = frozenset(
    {f".{f.lower()}" for f in sf.available_formats()} | {".aif", ".aifc", ".oga", ".opus", ".wave", ".sph", ".snd"}
)


@dataclass
class Result:
    files: int = 0  # audio files found
    shards: int = 0  # shards in the folder after the run
    shards_skipped: int = 0  # kept as they were
    encoded: int = 0  # files tokenized by this run
    new: int = 0  # files not in the folder before this run
    changed: int = 0  # files whose sha256 changed
    removed: int = 0  # files gone from the corpus (dropped from their shards)
    kept: int = 0  # files unchanged (their tokens are not encoded again)
    failed: list = field(default_factory=list)  # (path, error) skipped by this run
    audio_seconds: float = 0.0  # audio tokenized by this run
    seconds: float = 0.0

    def summary(self, out_dir) -> str:
        """The CLI's one-line report."""
        hours = self.audio_seconds / 3600
        return (
            f"{self.files} files: {self.new} new, {self.changed} changed, {self.removed} removed, {self.kept} kept; "
            f"{self.shards} shards ({self.shards_skipped} untouched); tokenized {self.encoded} "
            f"({hours:.3g} h of audio, {hours / max(self.seconds, 1e-9):.3g} h/s); {len(self.failed)} unreadable "
            f"skipped (all are listed in {Path(out_dir) / ERRORS})"
        )


# ---- listing and naming --------------------------------------------------------------------
def list_audio(root, exclude=()) -> list[str]:
    """Audio files under `root` (by extension), as sorted POSIX paths relative to it.

    Hidden files and folders (leading '.') and the folders in `exclude` are skipped.
    """
    root = Path(root)
    excluded = {Path(p).resolve() for p in exclude}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (here / d).resolve() not in excluded)
        for name in filenames:
            if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                found.append((here / name).relative_to(root).as_posix())
    return sorted(found)


def shard_groups(paths: list[str], shard_size: int) -> list[list[str]]:
    return [paths[i : i + shard_size] for i in range(0, len(paths), shard_size)]


def shard_name(index: int) -> str:
    return SHARD_PATTERN.format(index)


def shard_index(name: str) -> int | None:
    m = _SHARD_NAME.fullmatch(name)
    return int(m.group(1)) if m else None


# ---- manifest lines ------------------------------------------------------------------------
def _line(entry: dict, fields) -> str:
    return json.dumps({k: entry[k] for k in fields}) + "\n"


def read_jsonl(path: Path, fields) -> tuple[list[dict], int]:
    """Complete, well-formed lines of an append-only log; returns (entries, lines discarded).

    A torn last line (no newline, or not JSON) is what a crash mid-append leaves: it is discarded.
    """
    if not path.exists():
        return [], 0
    data = path.read_bytes()
    *complete, tail = data.split(b"\n")
    entries, dropped = [], int(bool(tail.strip()))
    for raw in complete:
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            dropped += 1
            continue
        if (isinstance(entry, dict) and all(k in entry for k in fields)
                and all(isinstance(entry[k], str) for k in ("path", "shard", "key") if k in fields)
                and shard_index(entry["shard"]) is not None):
            entries.append(entry)
        else:
            dropped += 1
    return entries, dropped


def _append(path: Path, lines: list[str]) -> None:
    if not lines:
        return
    with open(path, "ab") as f:
        f.write("".join(lines).encode())
        f.flush()
        os.fsync(f.fileno())


def _rewrite_if_changed(path: Path, lines: list[str]) -> None:
    data = "".join(lines).encode()
    if not path.exists() or path.read_bytes() != data:
        atomic.write_file(path, data)


# ---- files ---------------------------------------------------------------------------------
def sha256_file(path: Path) -> str | None:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


@dataclass
class _Item:
    path: str
    sha256: str
    clip: audio.Audio


def _load(root: Path, rel: str, sample_rate: int) -> tuple[str | None, _Item | None, str | None]:
    """(sha256, item, error): read the file once, hash it, decode it at the model's rate."""
    try:
        data = (root / rel).read_bytes()
    except OSError as e:
        return None, None, f"{rel}: cannot open it ({e.strerror or e})"
    digest = hashlib.sha256(data).hexdigest()
    try:
        clip = audio.read(data, sample_rate, name=rel)
    except InvalidInputError as e:
        return digest, None, str(e)
    return digest, _Item(rel, digest, clip), None


def _probe_seconds(path: Path) -> float:
    """The file's duration from its header (no decoding); -1 when unreadable (it fails at load)."""
    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate if info.samplerate > 0 else -1.0
    except Exception:  # any failure is reported when the file is loaded
        return -1.0


def _encode_items(model, items: list[_Item]) -> tuple[dict, list[tuple[_Item, str]]]:
    """Tokens per path for one batch (each item gets its solo tokens), and per-item failures."""
    try:
        return dict(zip((it.path for it in items), encode_batch(model, [it.clip.samples for it in items]))), []
    except InvalidInputError:
        if len(items) == 1:
            return {}, [(items[0], f"{items[0].path}: {sys.exc_info()[1]}")]
    tokens, failed = {}, []  # one bad item must not sink the others: retry them one by one
    for it in items:
        got, bad = _encode_items(model, [it])
        tokens.update(got)
        failed += bad
    return tokens, failed


def encode_batch(model, clips) -> list[torch.Tensor]:
    """Encode float32 mono arrays together; returns each item's int32 [G, F_i] tokens (CPU)."""
    lens = [int(c.shape[0]) for c in clips]
    batch = torch.zeros(len(clips), max(lens), dtype=torch.float32)
    for i, c in enumerate(clips):
        batch[i, : lens[i]] = torch.from_numpy(c)
    tokens, tokens_len = model.encode(batch.to(model.device), torch.tensor(lens, dtype=torch.int64))
    tokens, tokens_len = tokens.cpu(), tokens_len.cpu()
    return [tokens[i, :, : int(tokens_len[i])].clone() for i in range(len(clips))]


# ---- the settings OUT_DIR is bound to ------------------------------------------------------
def _state(model, model_ref: str, revision: str | None, shard_size: int, record: dict) -> dict:
    return {
        "format": STATE_FORMAT,
        "format_version": STATE_VERSION,
        "model": model_ref,
        "model_revision": revision,
        "config_sha256": model.config.sha256(),
        "dtype": precision.dtype_name(model.dtype),  # half precision may flip boundary tokens
        "tf32": record["tf32"],  # so may TF32 (CUDA)
        "sample_rate": model.sample_rate,
        "samples_per_frame": model.samples_per_frame,
        "shard_size": shard_size,
        "next_shard": 0,  # the first shard index never used
        "precision": record,  # what the last run ran with (precision.Policy.record)
    }


def _read_state(path: Path) -> dict:
    try:
        old = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        raise InvalidInputError(f"{path} is corrupt; delete {path.parent} and start again") from None
    if not isinstance(old, dict) or old.get("format") != STATE_FORMAT or old.get("format_version") not in (1, 2):
        raise InvalidInputError(f"{path} is not a tokenize state this nanocodec reads (format version "
                                f"{old.get('format_version') if isinstance(old, dict) else '?'}); use another output folder")
    if old["format_version"] == 1:  # the first layout: no TF32 choice recorded (it was not offered)
        old = {**old, "format_version": STATE_VERSION, "tf32": old.get("tf32", False)}
    return old


def _bind(out_dir: Path, state: dict) -> None:
    """Check that an existing OUT_DIR was made with these settings, or that a new one may be created."""
    path = out_dir / STATE
    if path.exists():
        old = _read_state(path)
        diff = sorted(k for k in state if k not in _UNBOUND and old.get(k) != state[k])
        if diff:
            raise InvalidInputError(
                f"{out_dir} was made with other settings ({', '.join(f'{k}: {old.get(k)!r}' for k in diff)}); "
                "use another output folder or delete this one to start again"
            )
        return
    if out_dir.exists() and any(p.name not in (STATE, LOCK) for p in out_dir.iterdir()):
        raise InvalidInputError(f"{out_dir} is not empty and is not a tokenize output folder; choose another")


def _write_state(out_dir: Path, state: dict) -> None:
    _rewrite_if_changed(out_dir / STATE, [json.dumps(state, indent=2, sort_keys=True) + "\n"])


def open_output(root, out_dir, model, model_ref, revision, shard_size, batch_size, record: dict) -> "Output":
    """Check the arguments and the corpus, and that OUT_DIR fits these settings (every engine starts
    here; nothing is written before the corpus is known to hold audio). `record`: the precision
    record of the run (precision.Policy.record)."""
    root, out_dir = Path(root), Path(out_dir)
    if not root.is_dir():
        raise InvalidInputError(f"{root} is not a folder; tokenize takes a folder of audio files")
    if shard_size < 1 or batch_size < 1:
        raise InvalidInputError("--shard-size and --batch-size must be at least 1")
    model_ref = token_files.model_reference(model_ref)
    state = _state(model, model_ref, revision, shard_size, record)
    _bind(out_dir, state)
    paths = list_audio(root, exclude=[out_dir])
    if not paths:
        raise InvalidInputError(f"no audio files under {root} (looked for {', '.join(sorted(AUDIO_EXTENSIONS))})")
    out_dir.mkdir(parents=True, exist_ok=True)
    return Output(root, out_dir, model_ref, paths, state)


@dataclass
class Output:
    """An output folder checked against a run's settings (what `open_output` returns)."""

    root: Path
    out_dir: Path
    model_ref: str
    paths: list[str]  # the corpus's audio files, sorted
    state: dict  # this run's tokenize.json (next_shard filled in by `plan`)


@contextlib.contextmanager
def locked(out_dir: Path):
    """One writer per output folder: a second run on it would list files twice."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(out_dir / LOCK, "a+b") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise InvalidInputError(f"another `nanocodec tokenize` is writing to {out_dir}; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# ---- what is in OUT_DIR already ------------------------------------------------------------
def _described(name: str, meta: dict, keys: set) -> tuple[list, list] | None:
    """A shard's own record of its items and errors (manifest and error entries), or None for a
    format-1 shard or a header that does not match its tensors."""
    if SOURCES_KEY not in meta or ERRORS_KEY not in meta:
        return None
    try:
        sources, errors, lengths = (json.loads(meta[k]) for k in (SOURCES_KEY, ERRORS_KEY, "lengths"))
        if set(sources) != keys or set(lengths) != keys:
            return None
        entries = [{"path": k, "sha256": s["sha256"], "duration_s": s["duration_s"],
                    "num_samples": int(lengths[k]["num_samples"]), "frames": int(lengths[k]["frames"]),
                    "shard": name, "key": k} for k, s in sources.items()]
        errs = [{"path": e["path"], "sha256": e["sha256"], "shard": name, "error": e["error"]} for e in errors]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return entries, errs


def _shard_header(path: Path) -> tuple[dict, set] | None:
    """(metadata, keys) of a shard file, or None when it is not a readable token file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta, keys = dict(f.metadata() or {}), set(f.keys())
    except Exception:  # safetensors raises its own types for bad headers
        return None
    return (meta, keys) if meta.get("format") == token_files.FORMAT else None


@dataclass
class _Shard:
    """One shard as the folder records it: its manifest and error entries, and whether its file holds them."""

    entries: list
    errors: list
    on_disk: bool  # False: listed in the manifest but its file is gone (redone under its name)

    def members(self) -> list[dict]:
        return self.entries + self.errors


def _recorded(out_dir: Path, log) -> dict[str, _Shard]:
    """Every committed shard: a self-describing shard file wins over the logs (it is written first);
    a format-1 shard counts where the manifest lists exactly its keys; a shard the logs name whose file
    is gone is to be redone. A shard file nothing describes is an uncommitted write: it is deleted."""
    manifest, dropped_m = read_jsonl(out_dir / MANIFEST, MANIFEST_FIELDS)
    errors, dropped_e = read_jsonl(out_dir / ERRORS, ERROR_FIELDS)
    if dropped_m or dropped_e:
        log(f"nanocodec: discarded {dropped_m + dropped_e} incomplete log line(s) left by an interrupted run")
    logged: dict[str, _Shard] = {}
    for e in manifest:
        logged.setdefault(e["shard"], _Shard([], [], False)).entries.append(e)
    for e in errors:
        logged.setdefault(e["shard"], _Shard([], [], False)).errors.append(e)
    shards: dict[str, _Shard] = {}
    for path in out_dir.glob("shard-*.safetensors"):
        name = path.name
        if shard_index(name) is None:
            continue
        header = _shard_header(path)
        described = _described(name, *header) if header else None
        lines = logged.get(name)
        if described is not None:
            shards[name] = _Shard(*described, True)
        elif header and lines and header[1] == {e["key"] for e in lines.entries} \
                and len(lines.entries) == len(header[1]):  # a format-1 shard, listed exactly
            shards[name] = _Shard(lines.entries, lines.errors, True)
        elif not lines:
            path.unlink()  # written, never committed: its files are planned again
    for name, lines in logged.items():
        shards.setdefault(name, lines)  # on_disk False: its file is gone or unusable
    return dict(sorted(shards.items(), key=lambda kv: shard_index(kv[0])))


# ---- the plan ------------------------------------------------------------------------------
@dataclass
class Job:
    """A shard to write: `encode` its files now, copy the `keep` entries' tokens from the shard file
    that holds them, keep the `keep_errors` entries as they are."""

    name: str
    encode: list[str]
    keep: list[dict] = field(default_factory=list)
    keep_errors: list[dict] = field(default_factory=list)
    rewrite: bool = False  # the shard is in the manifest already (its lines are replaced, not appended)


@dataclass
class Plan:
    """What a run has to do, and what the folder holds (shard -> its manifest and error entries)."""

    root: Path
    out_dir: Path
    state: dict
    jobs: list[Job]
    by_shard: dict[str, list]
    err_by_shard: dict[str, list]
    untouched: int
    counts: dict  # new, changed, removed, kept

    @property
    def todo(self) -> list[Job]:
        return self.jobs

    def names(self) -> list[str]:
        return sorted(set(self.by_shard) | {j.name for j in self.jobs}, key=shard_index)

    def canonical(self, table, fields) -> list[str]:
        return [_line(e, fields) for n in self.names() for e in sorted(table.get(n, []), key=lambda e: e["path"])]

    def write_canonical(self) -> None:
        """Manifest and error log in shard order, exactly what the shards hold."""
        _rewrite_if_changed(self.out_dir / MANIFEST, self.canonical(self.by_shard, MANIFEST_FIELDS))
        _rewrite_if_changed(self.out_dir / ERRORS, self.canonical(self.err_by_shard, ERROR_FIELDS))

    def result(self, files: int) -> Result:
        return Result(files=files, shards=len(self.names()), shards_skipped=self.untouched, **self.counts)


def plan(out: Output, shard_size: int, log) -> Plan:
    """Compare the corpus with what OUT_DIR holds (see the module docstring) and decide the jobs."""
    root, out_dir = out.root, out.out_dir
    for leftover in out_dir.glob(".*.tmp-*"):  # temporary files of a crashed write
        if leftover.is_file():
            leftover.unlink(missing_ok=True)
    state_path = out_dir / STATE
    before = _read_state(state_path) if state_path.exists() else {}
    listed = set(out.paths)
    shards = _recorded(out_dir, log)
    # a new folder, or one of format 1 (fixed groups, no record of it): every recorded index is used
    next_shard = before.get("next_shard", max([shard_index(n) + 1 for n in shards], default=0))
    out.state["next_shard"] = next_shard
    _write_state(out_dir, out.state)  # binds a new folder; migrates a format-1 one; this run's precision

    by_shard, err_by_shard, jobs = {}, {}, []
    counts = {"new": 0, "changed": 0, "removed": 0, "kept": 0}
    claimed: set[str] = set()
    untouched = 0
    for name, shard in shards.items():
        keep, keep_errors, encode, dirty = [], [], [], not shard.on_disk
        for kind, entries in (("entry", shard.entries), ("error", shard.errors)):
            for e in sorted(entries, key=lambda e: e["path"]):
                if e["path"] in claimed:  # listed twice (a damaged log): the first shard keeps it
                    dirty = True
                    continue
                claimed.add(e["path"])
                if e["path"] not in listed:
                    counts["removed"] += 1
                    dirty = True
                elif sha256_file(root / e["path"]) != e["sha256"]:
                    counts["changed"] += 1
                    encode.append(e["path"])
                else:
                    counts["kept"] += 1
                    if not shard.on_disk:
                        encode.append(e["path"])  # its tokens are gone with the file: encode it again
                    else:
                        (keep if kind == "entry" else keep_errors).append(e)
        if not (dirty or encode):
            by_shard[name], err_by_shard[name] = shard.entries, shard.errors
            untouched += 1
        elif not (keep or keep_errors or encode):  # every file gone: the shard goes, its index stays used
            out.state["next_shard"] = next_shard = max(next_shard, shard_index(name) + 1)
            _write_state(out_dir, out.state)  # before the file goes: the index must stay used
            (out_dir / name).unlink(missing_ok=True)
        else:
            jobs.append(Job(name, sorted(encode), keep, keep_errors, rewrite=True))
            if shard.on_disk:  # the old file still holds these until the new one replaces it
                by_shard[name], err_by_shard[name] = shard.entries, shard.errors

    fresh = sorted(listed - claimed)
    counts["new"] = len(fresh)
    used = {shard_index(n) for n in shards}
    index = next_shard
    for group in shard_groups(fresh, shard_size):
        while index in used:
            index += 1
        jobs.append(Job(shard_name(index), group))
        used.add(index)
    p = Plan(root, out_dir, out.state, jobs, by_shard, err_by_shard, untouched, counts)
    p.write_canonical()
    return p


def finish(p: Plan) -> None:
    """After the jobs: the manifest in canonical order, tokenize.json with the next unused index."""
    p.write_canonical()
    p.state["next_shard"] = max([p.state["next_shard"]] + [shard_index(n) + 1 for n in p.names()])
    _write_state(p.out_dir, p.state)


# ---- the pieces every engine runs (nanocodec/apps/ray_engine.py runs them on a Ray cluster) -------
def shard_batches(root: Path, group: list[str], batch_size: int) -> list[list[str]]:
    """A shard's batches: its files sorted by the duration their headers give (then path), cut in
    `batch_size` pieces, so that only one batch of audio is in memory at a time. Every engine
    encodes a shard in exactly these batches."""
    order = sorted(group, key=lambda rel: (_probe_seconds(root / rel), rel))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def load_batch(root: Path, chunk: list[str], sample_rate: int, shard: str) -> tuple[list[_Item], list[dict]]:
    """Read and decode one batch's files: (items, error entries for the unreadable ones)."""
    items, failed = [], []
    for rel in chunk:
        digest, item, error = _load(root, rel, sample_rate)
        if item is None:
            failed.append({"path": rel, "sha256": digest, "shard": shard, "error": error})
        else:
            items.append(item)
    return items, failed


@dataclass
class Encoded:
    """One batch's outcome: tokens per path, (path, sha256, seconds, num_samples) per tokenized
    file, error entries for the files the model refused, and the precision record it ran under."""

    tokens: dict = field(default_factory=dict)
    done: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    precision: dict | None = None

    def update(self, other: "Encoded") -> None:
        self.tokens.update(other.tokens)
        self.done += other.done
        self.failed += other.failed
        self.precision = self.precision or other.precision

    def paths(self) -> set[str]:
        return {d[0] for d in self.done} | {e["path"] for e in self.failed}


def encode_items(model, items: list[_Item], shard: str, record: dict | None = None) -> Encoded:
    got, bad = _encode_items(model, items) if items else ({}, [])
    return Encoded(
        tokens=got,
        done=[(it.path, it.sha256, it.clip.duration_s, it.clip.num_samples) for it in items if it.path in got],
        failed=[{"path": it.path, "sha256": it.sha256, "shard": shard, "error": msg} for it, msg in bad],
        precision=record,
    )


def commit_shard(plan: Plan, job: Job, enc: Encoded, meta: dict, result: Result, say) -> None:
    """Write a shard (atomically; it describes itself), then its manifest and error lines (fsync'ed):
    appended for a new shard, the logs rewritten for a rewritten one."""
    out_dir, name = plan.out_dir, job.name
    done_items = sorted(enc.done)
    tokens = dict(enc.tokens)
    if job.keep:  # copied from the shard file that holds them, not encoded again
        old = token_files.read(out_dir / name).tokens
        tokens.update({e["key"]: old[e["key"]] for e in job.keep})
    lines = [
        {"path": path, "sha256": sha, "duration_s": round(seconds, 6), "num_samples": n,
         "frames": int(tokens[path].shape[-1]), "shard": name, "key": path}
        for path, sha, seconds, n in done_items
    ]
    lines = sorted(lines + [dict(e) for e in job.keep], key=lambda e: e["path"])
    failed = sorted(enc.failed, key=lambda e: e["path"])
    errors = sorted(failed + [dict(e) for e in job.keep_errors], key=lambda e: e["path"])
    shard_meta = {
        **meta, "shard": name,
        SOURCES_KEY: json.dumps({e["key"]: {"sha256": e["sha256"], "duration_s": e["duration_s"]} for e in lines},
                                sort_keys=True, separators=(",", ":")),
        ERRORS_KEY: json.dumps([{"path": e["path"], "sha256": e["sha256"], "error": e["error"]} for e in errors],
                               sort_keys=True, separators=(",", ":")),
    }
    if enc.precision is not None:  # the settings of the process that encoded (a Ray actor's own)
        shard_meta["precision"] = token_files.precision_text(enc.precision)
    token_files.write(out_dir / name, {e["key"]: tokens[e["key"]] for e in lines},
                      {e["key"]: e["num_samples"] for e in lines}, shard_meta)
    plan.by_shard[name], plan.err_by_shard[name] = lines, errors
    if job.rewrite:
        plan.write_canonical()
    else:
        _append(out_dir / ERRORS, [_line(e, ERROR_FIELDS) for e in errors])
        _append(out_dir / MANIFEST, [_line(e, MANIFEST_FIELDS) for e in lines])
    for e in failed:
        say(f"nanocodec: skipped {e['error']}")
    result.encoded += len(done_items)
    result.failed += [(e["path"], e["error"]) for e in failed]
    result.audio_seconds += sum(seconds for _, _, seconds, _ in done_items)


def say_with(bar, log):
    return (lambda msg: bar.write(msg, file=sys.stderr)) if bar else log


def show_rate(bar, result: Result, started: float) -> None:
    if bar:
        hours = result.audio_seconds / 3600
        rate = hours / max(time.perf_counter() - started, 1e-9)
        bar.set_postfix_str(f"{hours:.3g} h audio, {rate:.3g} h/s")


# ---- the local engine ----------------------------------------------------------------------
def tokenize(
    root,
    out_dir,
    model,
    *,
    model_ref: str,
    revision: str | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    allow_tf32: bool = False,
    progress: bool = True,
    log=None,
) -> Result:
    """Tokenize every audio file under `root` into `out_dir` (see the module docstring), in this
    process, under the precision policy (float32 on CUDA: TF32 only with `allow_tf32`)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    started = time.perf_counter()
    with precision.precision_scope(model.device, model.dtype, allow_tf32=allow_tf32, backend=model.backend) as pol:
        record = pol.record()
        out = open_output(root, out_dir, model, model_ref, revision, shard_size, batch_size, record)
        with locked(out.out_dir):
            return _run(out, model, revision, shard_size, batch_size, record, progress, log, started)


def _run(out: Output, model, revision, shard_size, batch_size, record, progress, log, started) -> Result:
    p = plan(out, shard_size, log)
    result = p.result(len(out.paths))
    meta = token_files.header(model, out.model_ref, revision, precision=record)
    bar = _progress(sum(len(j.encode) for j in p.todo), progress)
    try:
        for job in p.todo:
            enc = Encoded(precision=record)
            for chunk in shard_batches(out.root, job.encode, batch_size):
                items, failed = load_batch(out.root, chunk, model.sample_rate, job.name)
                enc.failed += failed
                enc.update(encode_items(model, items, job.name, record))
                if bar:
                    bar.update(len(chunk))
            commit_shard(p, job, enc, meta, result, say_with(bar, log))
            show_rate(bar, result, started)
    finally:
        if bar:
            bar.close()
    finish(p)
    result.shards = len(p.names())
    result.seconds = time.perf_counter() - started
    return result


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="file", desc="tokenize", file=sys.stderr, dynamic_ncols=True)
