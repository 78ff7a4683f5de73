"""Tokenize a corpus: every audio file under a folder -> token shards + `manifest.jsonl`, resumably.

Layout of OUT_DIR:
    tokenize.json               the settings the run is bound to (model, config sha256, dtype, shard size)
    shard-000000.safetensors    one token file per group (nanocodec/fileio/token_files.py), keyed by path
    manifest.jsonl              one line per tokenized file:
        {"path", "sha256", "duration_s", "num_samples", "frames", "shard", "key"}
    errors.jsonl                one line per file that could not be read: {"path", "sha256", "shard", "error"}

Determinism: files are sorted by their path relative to the corpus (POSIX form) and cut into fixed
groups of `shard_size`; group i is shard i. Inside a group, items are batched by length (sorted by
the duration their headers give, then path; only one batch of audio is in memory at a time). The model's
ragged `encode` is batch-invariant, so every item gets its solo tokens. A shard's bytes therefore depend only on its files, and a resumed run writes what an
uninterrupted one writes.

Crash safety and resume: a shard is written (temporary sibling, fsync, rename) before its manifest
lines are appended (then fsync). On the next run a shard counts as finished only when its file exists,
holds exactly the keys its manifest lines name, the manifest and error lines cover exactly its group,
and every file's sha256 is unchanged. Everything else is redone: its old lines are dropped (a torn last
line too) before new ones are appended, so nothing is ever listed twice. At the end the manifest is
rewritten in canonical order if a resume left it out of order.

Engines: `tokenize` runs everything in this process. nanocodec/apps/ray_engine.py (`--engine ray`) runs the
same pieces on a Ray cluster: `open_output`, `locked` and `plan` on the driver, `shard_batches`,
`load_batch` and `encode_items` in Ray workers, `commit_shard` and `Plan.write_canonical` on the
driver again; so both write the same bytes, and either can resume the other's output folder.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf
import torch

from ..fileio import atomic, audio, token_files
from . import DEFAULT_BATCH_SIZE, DEFAULT_SHARD_SIZE  # noqa: F401  (re-exported: corpus.DEFAULT_*)
from ..errors import InvalidInputError

MANIFEST = "manifest.jsonl"
ERRORS = "errors.jsonl"
STATE = "tokenize.json"
LOCK = ".tokenize.lock"
SHARD_PATTERN = "shard-{:06d}.safetensors"
STATE_FORMAT = "nanocodec-tokenize"
STATE_VERSION = 1
MANIFEST_FIELDS = ("path", "sha256", "duration_s", "num_samples", "frames", "shard", "key")
ERROR_FIELDS = ("path", "sha256", "shard", "error")
# every container libsndfile knows, plus the usual aliases
AUDIO_EXTENSIONS = frozenset(
    {f".{f.lower()}" for f in sf.available_formats()} | {".aif", ".aifc", ".oga", ".opus", ".wave", ".sph", ".snd"}
)


@dataclass
class Result:
    files: int = 0  # audio files found
    shards: int = 0
    shards_skipped: int = 0  # finished by an earlier run
    encoded: int = 0  # files tokenized by this run
    failed: list = field(default_factory=list)  # (path, error) skipped by this run
    audio_seconds: float = 0.0  # audio tokenized by this run
    seconds: float = 0.0


# ---- listing and grouping ------------------------------------------------------------------
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
                and all(isinstance(entry[k], str) for k in ("path", "shard", "key") if k in fields)):
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


# ---- the run -------------------------------------------------------------------------------
def _state(model, model_ref: str, revision: str | None, shard_size: int) -> dict:
    return {
        "format": STATE_FORMAT,
        "format_version": STATE_VERSION,
        "model": model_ref,
        "model_revision": revision,
        "config_sha256": model.config.sha256(),
        "dtype": str(model.dtype).replace("torch.", ""),  # half precision may flip boundary tokens
        "sample_rate": model.sample_rate,
        "samples_per_frame": model.samples_per_frame,
        "shard_size": shard_size,
    }


def _bind(out_dir: Path, state: dict) -> None:
    """Create OUT_DIR bound to these settings, or check that an existing one was made with them."""
    path = out_dir / STATE
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InvalidInputError(f"{path} is corrupt; delete {out_dir} and start again") from None
        diff = sorted(k for k in state if old.get(k) != state[k])
        if diff:
            raise InvalidInputError(
                f"{out_dir} was made with other settings ({', '.join(f'{k}: {old.get(k)!r}' for k in diff)}); "
                "use another output folder or delete this one to start again"
            )
        return
    if out_dir.exists() and any(p.name not in (STATE, LOCK) for p in out_dir.iterdir()):
        raise InvalidInputError(f"{out_dir} is not empty and is not a tokenize output folder; choose another")
    atomic.write_file(path, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode())


def _shard_keys(path: Path) -> set[str] | None:
    try:
        return set(token_files.read(path).tokens)
    except InvalidInputError:
        return None


def _finished(root, out_dir, name, group, entries, errors) -> bool:
    shard = out_dir / name
    covered = [e["path"] for e in entries] + [e["path"] for e in errors]
    if not shard.exists() or sorted(covered) != group:  # group is sorted, without duplicates
        return False
    if _shard_keys(shard) != {e["key"] for e in entries}:
        return False
    return all(sha256_file(root / e["path"]) == e["sha256"] for e in entries + errors)


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


def tokenize(
    root,
    out_dir,
    model,
    *,
    model_ref: str,
    revision: str | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    log=None,
) -> Result:
    """Tokenize every audio file under `root` into `out_dir` (see the module docstring)."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    started = time.perf_counter()
    root, out_dir, model_ref = open_output(root, out_dir, model, model_ref, revision, shard_size, batch_size)
    with locked(out_dir):
        return _run(root, out_dir, model, model_ref, revision, shard_size, batch_size, progress, log, started)


def open_output(root, out_dir, model, model_ref, revision, shard_size, batch_size) -> tuple[Path, Path, str]:
    """Check the arguments and bind OUT_DIR to the settings (every engine starts here)."""
    root, out_dir = Path(root), Path(out_dir)
    if not root.is_dir():
        raise InvalidInputError(f"{root} is not a folder; tokenize takes a folder of audio files")
    if shard_size < 1 or batch_size < 1:
        raise InvalidInputError("--shard-size and --batch-size must be at least 1")
    model_ref = token_files.model_reference(model_ref)
    _bind(out_dir, _state(model, model_ref, revision, shard_size))
    out_dir.mkdir(parents=True, exist_ok=True)
    return root, out_dir, model_ref


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



# ---- the pieces every engine runs (nanocodec/apps/ray_engine.py runs them on a Ray cluster) -------
@dataclass
class Plan:
    """What a run has to do: the shards (name -> group of paths), and what earlier runs finished."""

    root: Path
    out_dir: Path
    names: list[str]
    groups: list[list[str]]
    done: set[str]
    by_shard: dict[str, list]  # shard -> its manifest entries
    err_by_shard: dict[str, list]  # shard -> its error entries

    @property
    def todo(self) -> list[tuple[str, list[str]]]:
        return [(n, g) for n, g in zip(self.names, self.groups) if n not in self.done]

    def canonical(self, table, fields) -> list[str]:
        return [_line(e, fields) for n in self.names for e in sorted(table[n], key=lambda e: e["path"])]

    def write_canonical(self) -> None:
        """Manifest and error log in shard order (a resume may have appended shards out of order)."""
        _rewrite_if_changed(self.out_dir / MANIFEST, self.canonical(self.by_shard, MANIFEST_FIELDS))
        _rewrite_if_changed(self.out_dir / ERRORS, self.canonical(self.err_by_shard, ERROR_FIELDS))


def plan(root: Path, out_dir: Path, shard_size: int, log) -> Plan:
    """List and group the corpus, keep what earlier runs finished, drop the rest (and stale shards)."""
    for leftover in out_dir.glob(".*.tmp-*"):  # temporary files of a crashed write
        leftover.unlink(missing_ok=True)

    paths = list_audio(root, exclude=[out_dir])
    if not paths:
        raise InvalidInputError(f"no audio files under {root} (looked for {', '.join(sorted(AUDIO_EXTENSIONS))})")
    groups = shard_groups(paths, shard_size)
    names = [shard_name(i) for i in range(len(groups))]

    manifest, dropped_m = read_jsonl(out_dir / MANIFEST, MANIFEST_FIELDS)
    errors, dropped_e = read_jsonl(out_dir / ERRORS, ERROR_FIELDS)
    if dropped_m or dropped_e:
        log(f"nanocodec: discarded {dropped_m + dropped_e} incomplete log line(s) left by an interrupted run")
    by_shard: dict[str, list] = {n: [] for n in names}
    err_by_shard: dict[str, list] = {n: [] for n in names}
    for e in manifest:
        by_shard.setdefault(e["shard"], []).append(e)
    for e in errors:
        err_by_shard.setdefault(e["shard"], []).append(e)
    done = {n for n, g in zip(names, groups) if _finished(root, out_dir, n, g, by_shard[n], err_by_shard[n])}
    for n in names:
        if n not in done:
            by_shard[n], err_by_shard[n] = [], []
    for stale in out_dir.glob("shard-*.safetensors"):  # shards of a larger earlier corpus
        if stale.name not in names:
            stale.unlink()
    p = Plan(root, out_dir, names, groups, done, by_shard, err_by_shard)
    p.write_canonical()
    return p


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
    file, and error entries for the files the model refused."""

    tokens: dict = field(default_factory=dict)
    done: list = field(default_factory=list)
    failed: list = field(default_factory=list)

    def update(self, other: "Encoded") -> None:
        self.tokens.update(other.tokens)
        self.done += other.done
        self.failed += other.failed


def encode_items(model, items: list[_Item], shard: str) -> Encoded:
    got, bad = _encode_items(model, items) if items else ({}, [])
    return Encoded(
        tokens=got,
        done=[(it.path, it.sha256, it.clip.duration_s, it.clip.num_samples) for it in items if it.path in got],
        failed=[{"path": it.path, "sha256": it.sha256, "shard": shard, "error": msg} for it, msg in bad],
    )


def commit_shard(plan: Plan, name: str, enc: Encoded, meta: dict, result: Result, say) -> None:
    """Write a shard (atomically), then append its manifest and error lines (fsync'ed)."""
    out_dir = plan.out_dir
    done_items = sorted(enc.done)
    tokens = enc.tokens
    token_files.write(
        out_dir / name,
        {path: tokens[path] for path, *_ in done_items},
        {path: n for path, _, _, n in done_items},
        {**meta, "shard": name},
    )
    lines = [
        {"path": path, "sha256": sha, "duration_s": round(seconds, 6), "num_samples": n,
         "frames": int(tokens[path].shape[-1]), "shard": name, "key": path}
        for path, sha, seconds, n in done_items
    ]
    failed = sorted(enc.failed, key=lambda e: e["path"])
    _append(out_dir / ERRORS, [_line(e, ERROR_FIELDS) for e in failed])
    _append(out_dir / MANIFEST, [_line(e, MANIFEST_FIELDS) for e in lines])
    plan.by_shard[name], plan.err_by_shard[name] = lines, failed
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


def _run(root, out_dir, model, model_ref, revision, shard_size, batch_size, progress, log, started) -> Result:
    p = plan(root, out_dir, shard_size, log)
    result = Result(files=sum(len(g) for g in p.groups), shards=len(p.groups), shards_skipped=len(p.done))
    todo = p.todo
    meta = token_files.header(model, model_ref, revision)
    bar = _progress(sum(len(g) for _, g in todo), progress)
    try:
        for name, group in todo:
            enc = Encoded()
            for chunk in shard_batches(root, group, batch_size):
                items, failed = load_batch(root, chunk, model.sample_rate, name)
                enc.failed += failed
                enc.update(encode_items(model, items, name))
                if bar:
                    bar.update(len(chunk))
            commit_shard(p, name, enc, meta, result, say_with(bar, log))
            show_rate(bar, result, started)
    finally:
        if bar:
            bar.close()
    p.write_canonical()
    result.seconds = time.perf_counter() - started
    return result


def _progress(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="file", desc="tokenize", file=sys.stderr, dynamic_ncols=True)
