"""`nanocodec tokenize --engine ray`: the corpus tokenizer of nanocodec/apps/corpus.py on a Ray cluster.

The pipeline (Ray Data, streaming):

    shards to write (driver: list, compare with OUT_DIR, plan: corpus.plan)
      -> plan each shard's batches   (CPU tasks: header probes, corpus.shard_batches)
      -> read + decode + resample    (CPU tasks: corpus.load_batch, one row per batch)
      -> encode                      (actors, each loading the model once, on a GPU when asked:
                                      corpus.encode_items on exactly that batch, under the precision policy)
      -> write shard + manifest      (driver: corpus.commit_shard once all of a shard's files are in)

A row is one batch of one shard, cut exactly as the single-process engine cuts it, so every file is
encoded in the same batch composition as there; with the same threads per encoder the tokens are
byte-identical in practice (contracts §5 is the rule; tests/test_ray.py compares them). The driver is
the only writer of OUT_DIR: shards are written atomically and their manifest lines written only
after, so settings, incremental runs, resume, bad-file rules, the lock and the bytes on disk are the
single-process engine's; an output folder can be started with one engine and resumed with the other.
Shards whose files were only deleted are rewritten on the driver (their tokens are copied).

Faults, bounded: a task or actor that dies is retried by Ray at most `max_attempts` times in all
(default 3: `max_retries` / `max_task_retries` = max_attempts - 1; a batch that arrives twice is
ignored). A batch that still fails is dropped by Ray Data (`max_errored_blocks`), and once the
pipeline has run, the driver tries the files of every incomplete shard again one file per row, each
actor holding one row at a time (so that a death costs an attempt of the file it ran only), with the
same bound: the files that come back are committed as usual, and only a file whose worker died
`max_attempts` times on it alone is listed in errors.jsonl, with that reason (Ray cannot say which
row killed an actor: the file-by-file pass is how the culprit is found). Exceptions raised by our own
code in a worker (a bug, a wrong model) are not retried: they end the job with `RayJobError`, and the
shards written so far are finished; a rerun resumes.

Multi-node: DIR must be readable at the same path on every node (a shared filesystem) and --model
must be a folder at the same path on every node or a hub id; OUT_DIR is written by the driver only.
"""
from __future__ import annotations

import logging
import pickle
import re
import sys
import time
import warnings
from pathlib import Path

from .. import precision
from ..fileio import token_files
from . import corpus as tk
from ..errors import InvalidInputError, NanoCodecError

# Reserved per decode task: small, so that encoders reserving one CPU each can fill a machine's
# CPUs and decoding still gets scheduled (decoding and resampling cost little next to encoding).
DECODE_CPUS = 0.25
MAX_ATTEMPTS = 3  # tries per batch, then per file, before a file is blamed for killing its worker
# Actor restarts stay unlimited, as Ray Data expects of its pool (an actor out of restarts is dead for
# the rest of the pass, and every row sent to it after would be lost and then wrongly blamed); they are
# bounded all the same, by the task retries: every restart follows a death during some attempt.
ACTOR_RESTARTS = -1


class RayJobError(NanoCodecError):
    """The Ray job failed (a worker error, the cluster gone): the shards written so far are kept."""


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InvalidInputError("--engine ray needs Ray: pip install 'nanocodec[ray]'") from None
    return ray


# ---- the stages (each runs in a Ray worker) --------------------------------------------------
def _fatal(row: dict, stage: str) -> dict:
    """A row that reports an exception of our own code: the driver ends the job with it (Ray Data
    would drop the row and carry on: dropped rows are what the file-by-file pass is for)."""
    exc = sys.exc_info()[1]
    return {"shard": row.get("shard", ""), "batch": -1, "files": 0, "paths": [], "result": b"",
            "fatal": f"{stage}: {type(exc).__name__}: {exc}"}


def _plan_shard(row: dict, root: str, batch_size: int) -> list[dict]:
    try:
        batches = tk.shard_batches(Path(root), list(row["paths"]), batch_size)
    except Exception:
        return [_fatal(row, "planning batches")]
    return [{"shard": row["shard"], "batch": i, "paths": list(chunk)} for i, chunk in enumerate(batches)]


def _load_rows(row: dict, root: str, sample_rate: int) -> dict:
    if row.get("fatal"):
        return row
    paths = list(row["paths"])
    try:
        items, failed = tk.load_batch(Path(root), paths, sample_rate, row["shard"])
    except Exception:
        return _fatal(row, "reading audio")
    return {"shard": row["shard"], "batch": row["batch"], "files": len(paths), "paths": paths,
            "result": pickle.dumps((items, failed), protocol=5), "fatal": ""}


class Encoder:
    """An encode actor: loads the model once, then encodes one batch per row (`encode`) under the
    precision policy; `__call__` turns an exception of ours into a fatal row."""

    def __init__(self, model_ref: str, revision: str | None, dtype: str, device: str, threads: int,
                 config_sha256: str, backend: str = "auto", allow_tf32: bool = False):
        import torch

        from ..model import AudioCodecModel

        if threads:
            torch.set_num_threads(threads)
        self.allow_tf32 = allow_tf32
        self.model = AudioCodecModel.from_pretrained(model_ref, revision=revision, device=device,
                                                     dtype=precision.dtype_of(dtype), backend=backend)
        if self.model.config.sha256() != config_sha256:
            raise InvalidInputError(f"{model_ref} on this worker is not the driver's model (config sha256 differs)")

    def encode(self, row: dict) -> tk.Encoded:
        items, failed = pickle.loads(row["result"])
        m = self.model
        with precision.precision_scope(m.device, m.dtype, allow_tf32=self.allow_tf32, backend=m.backend) as pol:
            enc = tk.encode_items(m, items, row["shard"], pol.record())
        enc.failed = failed + enc.failed
        return enc

    def __call__(self, row: dict) -> dict:
        if row.get("fatal"):
            return row
        try:
            enc = self.encode(row)
        except Exception:
            return _fatal(row, "encoding")
        return {**row, "result": pickle.dumps(enc, protocol=5)}


# ---- the driver ------------------------------------------------------------------------------
def tokenize(
    root,
    out_dir,
    model,
    *,
    model_ref: str,
    revision: str | None = None,
    shard_size: int = tk.DEFAULT_SHARD_SIZE,
    batch_size: int = tk.DEFAULT_BATCH_SIZE,
    allow_tf32: bool = False,
    progress: bool = True,
    log=None,
    address: str | None = None,
    workers: int | None = None,
    num_gpus_per_worker: float | None = None,
    cpus_per_worker: float | None = None,
    threads_per_worker: int | None = None,
    max_attempts: int = MAX_ATTEMPTS,
    encoder_cls: type = Encoder,
) -> tk.Result:
    """Tokenize every audio file under `root` into `out_dir` on Ray; the result and the bytes on disk
    are corpus.tokenize's. `model` (on the driver, any device) gives the settings; each encoder
    loads `model_ref` itself, on CUDA when `num_gpus_per_worker` > 0, and runs it under the precision
    policy (TF32 only with `allow_tf32`). Uses the running Ray cluster, or connects to `address`
    (auto, ray://...), or starts a local one. `workers` encoders (default: as many as the cluster's
    GPUs or CPUs allow), each with `threads_per_worker` torch threads (default: the CPUs it reserves,
    at least 1; fix it for byte-identical tokens across machines). `max_attempts` bounds the tries
    of a batch and then of a file whose worker dies (see the module docstring)."""
    ray = require_ray()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    num_gpus_per_worker = num_gpus_per_worker or 0
    cpus_per_worker = 1 if cpus_per_worker is None else cpus_per_worker
    if num_gpus_per_worker < 0 or cpus_per_worker < 0 or (workers is not None and workers < 1) or max_attempts < 1:
        raise InvalidInputError("--workers and max_attempts must be at least 1, and per-worker resources not negative")
    if threads_per_worker is None:
        threads_per_worker = max(1, round(cpus_per_worker))
    started = time.perf_counter()
    device = "cuda" if num_gpus_per_worker > 0 else "cpu"
    backend = "reference" if model.backend == "reference" else "auto"
    expected = precision.settings(device, model.dtype, allow_tf32=allow_tf32, backend=backend,
                                  threads=threads_per_worker)  # what every encoder should run under
    out = tk.open_output(root, out_dir, model, model_ref, revision, shard_size, batch_size, expected)
    with tk.locked(out.out_dir):
        p = tk.plan(out, shard_size, log)
        result = p.result(len(out.paths))
        meta = token_files.header(model, out.model_ref, revision, precision=expected)
        for job in [j for j in p.todo if not j.encode]:  # deletions only: tokens copied here
            tk.commit_shard(p, job, tk.Encoded(), meta, result, log)
        todo = [j for j in p.todo if j.encode]
        if todo:
            own = not ray.is_initialized()
            if own:
                ray.init(address=address, include_dashboard=False, log_to_driver=progress,
                         logging_level=logging.INFO if progress else logging.ERROR)
            try:
                settings = {"model_ref": out.model_ref, "revision": revision, "dtype": precision.dtype_name(model.dtype),
                            "device": device, "threads": threads_per_worker, "config_sha256": model.config.sha256(),
                            "backend": backend, "allow_tf32": allow_tf32}
                _execute(ray, p, todo, model, meta, settings, batch_size, progress, log, result, started,
                         workers, num_gpus_per_worker, cpus_per_worker, max_attempts, encoder_cls)
            finally:
                if own:
                    ray.shutdown()
        tk.finish(p)
    result.shards = len(p.names())
    result.seconds = time.perf_counter() - started
    return result


def resources(ray, workers, num_gpus: float, cpus: float, log) -> tuple[int, float]:
    """(encoders, CPUs each reserves): by default as many encoders as the cluster's GPUs (or CPUs)
    allow; CPU encoders that would leave no CPU for decoding reserve less (they share the cores)."""
    res = ray.cluster_resources()
    total_cpus, gpus = res.get("CPU", 0.0), res.get("GPU", 0.0)
    if num_gpus > 0:
        if gpus < num_gpus:
            raise InvalidInputError(f"--num-gpus-per-worker {num_gpus:g}: the Ray cluster has {gpus:g} GPU(s)")
        return workers or max(1, int(gpus // num_gpus)), cpus
    if not workers:
        workers = max(1, int((total_cpus - DECODE_CPUS) // cpus)) if cpus > 0 else 1
    if workers * cpus + DECODE_CPUS > total_cpus:
        fit = (total_cpus - DECODE_CPUS) / workers
        if fit <= 0:
            raise InvalidInputError(f"the Ray cluster has {total_cpus:g} CPU(s): too few for {workers} encoder(s)")
        log(f"nanocodec: {workers} CPU encoder(s) on {total_cpus:g} CPU(s): each reserves {fit:.3g} CPU "
            "so that decoding is still scheduled")
        cpus = fit
    return workers, cpus


def _execute(ray, p, todo, model, meta, settings, batch_size, progress, log, result, started,
             workers, num_gpus, cpus, max_attempts, encoder_cls) -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    # One block per row (a row is a batch of a shard): each batch streams on to an encoder as soon as
    # it is decoded, and each result to the driver as soon as it is encoded (with Ray's default of
    # 128 MiB, a task's rows travel together: a whole shard's audio at once, results in bursts).
    # A row that still fails after its retries is dropped, not the job: the driver finds its files.
    saved = {"target_max_block_size": 1, "enable_progress_bars": False,  # ours counts files
             "print_on_execution_start": False, "max_errored_blocks": -1}
    saved = {k: (getattr(ctx, k), setattr(ctx, k, v))[0] for k, v in saved.items()}
    logger = logging.getLogger("ray.data")
    level = logger.level
    if not progress:
        logger.setLevel(logging.CRITICAL)  # dropped rows are reported by us, per file
    workers, cpus = resources(ray, workers, num_gpus, cpus, log)
    bar = tk._progress(sum(len(j.encode) for j in todo), progress)
    say = tk.say_with(bar, log)
    jobs = {j.name: j for j in todo}
    got: dict[str, tk.Encoded] = {j.name: tk.Encoded() for j in todo}
    committed: set[str] = set()
    root = str(p.root.resolve())
    pipeline = dict(ray=ray, root=root, model=model, settings=settings, batch_size=batch_size, workers=workers,
                    num_gpus=num_gpus, cpus=cpus, retries=max_attempts - 1, encoder_cls=encoder_cls)
    try:
        rows = [{"shard": j.name, "paths": j.encode} for j in todo]
        _collect(_dataset(rows, per_file=False, **pipeline), p, jobs, got, committed, meta, result, started, bar, say)
        missing = {n: sorted(set(jobs[n].encode) - got[n].paths()) for n in jobs if n not in committed}
        rows = [{"shard": n, "batch": i, "paths": [path]} for n, paths in missing.items() for i, path in enumerate(paths)]
        if rows:
            say(f"nanocodec: {len(rows)} file(s) of {len(missing)} shard(s) lost with a worker that died "
                f"{max_attempts} times: trying them one by one")
            _collect(_dataset(rows, per_file=True, **pipeline), p, jobs, got, committed, meta, result, started, bar, say)
        for name in [n for n in jobs if n not in committed]:  # what is still missing killed its worker alone
            for path in sorted(set(jobs[name].encode) - got[name].paths()):
                got[name].failed.append({
                    "path": path, "sha256": tk.sha256_file(p.root / path), "shard": name,
                    "error": f"{path}: a Ray worker died {max_attempts} times decoding or encoding this file alone "
                             "(a crash or an out-of-memory kill); skipped"})
            _commit(p, jobs[name], got[name], meta, result, started, bar, say, committed)
    except ray.exceptions.RayError as e:
        raise RayJobError(f"the Ray job failed after {len(committed)} of {len(todo)} shard(s) ({_first_line(e)}); "
                          "the shards written are kept: rerun the same command to resume") from e
    except RayJobError as e:
        raise RayJobError(f"the Ray job failed after {len(committed)} of {len(todo)} shard(s) ({e}); "
                          "the shards written are kept: rerun the same command to resume") from None
    finally:
        if bar:
            bar.close()
        for k, v in saved.items():
            setattr(ctx, k, v)
        logger.setLevel(level)


def _dataset(rows, *, per_file, ray, root, model, settings, batch_size, workers, num_gpus, cpus, retries, encoder_cls):
    """The pipeline over `rows`: shards cut into batches as the local engine cuts them, or (the
    retry pass) rows that are one file each already."""
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    with warnings.catch_warnings():
        # Ray Data has no named parameter for retries: `ray_remote_args` is the only way (deprecated
        # in Ray 2.60 "for removal in 2.64")
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        if not per_file:
            ds = ds.flat_map(_plan_shard, fn_kwargs={"root": root, "batch_size": batch_size}, num_cpus=DECODE_CPUS,
                             max_retries=retries)
        ds = ds.map(_load_rows, fn_kwargs={"root": root, "sample_rate": model.sample_rate}, num_cpus=DECODE_CPUS,
                    max_retries=retries)
        # In the file-by-file pass an actor holds one row at a time: Ray Data otherwise queues several
        # rows on each actor, and when the culprit kills it, every row queued there fails with it and
        # spends an attempt, so innocent files would be blamed beside it.
        pool = ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1 if per_file else None)
        return ds.map(
            encoder_cls, fn_constructor_kwargs=settings,
            compute=pool, num_cpus=cpus, num_gpus=num_gpus or None,
            # bounded (Ray Data's defaults retry forever): a batch whose actor dies `retries + 1` times fails
            max_task_retries=retries, max_restarts=ACTOR_RESTARTS,
        )


def _first_line(e: BaseException) -> str:
    """The worker's own exception (`RuntimeError: ...`) from a Ray error's text, else its first line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    for ln in text.splitlines():
        m = re.match(r"([A-Za-z_][\w.]*(?:Error|Exception)): (.*)$", ln.strip())
        if m and not m.group(1).startswith("ray."):
            return f"{m.group(1)}: {m.group(2)}"[:300]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]


def _collect(ds, p, jobs, got, committed: set, meta, result, started, bar, say) -> None:
    """Gather each shard's batches as they come; commit a shard once all its files are in."""
    for row in ds.iter_rows():
        if row.get("fatal"):
            raise RayJobError(row["fatal"])
        name = row["shard"]
        if name in committed:  # a retried batch delivered twice
            continue
        enc: tk.Encoded = pickle.loads(row["result"])
        have = got[name].paths()
        if enc.paths() & have:
            continue
        got[name].update(enc)
        if bar:
            bar.update(int(row["files"]))
        if set(jobs[name].encode) <= got[name].paths():
            _commit(p, jobs[name], got[name], meta, result, started, bar, say, committed)


def _commit(p, job, enc, meta, result, started, bar, say, committed: set) -> None:
    tk.commit_shard(p, job, enc, meta, result, say)
    committed.add(job.name)
    tk.show_rate(bar, result, started)
