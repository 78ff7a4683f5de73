"""`nanocodec tokenize --engine ray`: the corpus tokenizer of nanocodec/apps/corpus.py on a Ray cluster.

The pipeline (Ray Data, streaming):

    shards still to do (driver: list, group, resume rules of tokenize.plan)
      -> plan each shard's batches   (CPU tasks: header probes, tokenize.shard_batches)
      -> read + decode + resample    (CPU tasks: tokenize.load_batch, one row per batch)
      -> encode                      (actors, each loading the model once, on a GPU when asked:
                                      tokenize.encode_items on exactly that batch)
      -> write shard + manifest      (driver: tokenize.commit_shard once all of a shard's batches are in)

A row is one batch of one shard, cut exactly as the single-process engine cuts it, so every file is
encoded in the same batch composition as there; with the same threads per encoder the tokens are
byte-identical in practice (contracts §5 is the rule; tests/test_ray.py compares them). The driver is
the only writer of OUT_DIR: shards are written atomically and their manifest lines appended only
after, so settings, resume, bad-file rules, the lock and the bytes on disk are the single-process
engine's; an output folder can be started with one engine and resumed with the other.

Faults: a decode task that dies is retried by Ray; an encode actor that dies is restarted and its
batch retried (`max_task_retries`); a batch that arrives twice is ignored. If the job fails anyway,
the shards written so far are finished and a rerun resumes.

Multi-node: DIR must be readable at the same path on every node (a shared filesystem) and --model
must be a folder at the same path on every node or a hub id; OUT_DIR is written by the driver only.
"""
from __future__ import annotations

import logging
import pickle
import re
import sys
import time
from pathlib import Path

from ..fileio import token_files
from . import corpus as tk
from ..errors import InvalidInputError, NanoCodecError

# Reserved per decode task: small, so that encoders reserving one CPU each can fill a machine's
# CPUs and decoding still gets scheduled (decoding and resampling cost little next to encoding).
DECODE_CPUS = 0.25


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
def _plan_shard(row: dict, root: str, batch_size: int) -> list[dict]:
    batches = tk.shard_batches(Path(root), list(row["paths"]), batch_size)
    return [{"shard": row["shard"], "batch": i, "batches": len(batches), "paths": list(chunk)}
            for i, chunk in enumerate(batches)]


def _load_rows(row: dict, root: str, sample_rate: int) -> dict:
    paths = list(row["paths"])
    items, failed = tk.load_batch(Path(root), paths, sample_rate, row["shard"])
    return {"shard": row["shard"], "batch": row["batch"], "batches": row["batches"], "files": len(paths),
            "payload": pickle.dumps((items, failed), protocol=5)}


class Encoder:
    """An encode actor: loads the model once, then encodes one batch per row."""

    def __init__(self, model_ref: str, revision: str | None, dtype: str, device: str, threads: int,
                 config_sha256: str):
        import torch

        from ..model import AudioCodecModel

        if threads:
            torch.set_num_threads(threads)
        if device == "cuda":  # contracts §5: CUDA float32 means TF32 off (this process is the actor's own)
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        self.model = AudioCodecModel.from_pretrained(model_ref, revision=revision, device=device,
                                                     dtype=getattr(torch, dtype))
        if self.model.config.sha256() != config_sha256:
            raise InvalidInputError(f"{model_ref} on this worker is not the driver's model (config sha256 differs)")

    def __call__(self, row: dict) -> dict:
        items, failed = pickle.loads(row["payload"])
        enc = tk.encode_items(self.model, items, row["shard"])
        enc.failed = failed + enc.failed
        return {"shard": row["shard"], "batch": row["batch"], "batches": row["batches"], "files": row["files"],
                "result": pickle.dumps(enc, protocol=5)}


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
    progress: bool = True,
    log=None,
    address: str | None = None,
    workers: int | None = None,
    num_gpus_per_worker: float | None = None,
    cpus_per_worker: float | None = None,
    threads_per_worker: int | None = None,
    encoder_cls: type = Encoder,
) -> tk.Result:
    """Tokenize every audio file under `root` into `out_dir` on Ray; the result and the bytes on disk
    are tokenize.tokenize's. `model` (on the driver, any device) gives the settings; each encoder
    loads `model_ref` itself, on CUDA when `num_gpus_per_worker` > 0. Uses the running Ray cluster,
    or connects to `address` (auto, ray://...), or starts a local one. `workers` encoders (default:
    as many as the cluster's GPUs or CPUs allow), each with `threads_per_worker` torch threads
    (default: the CPUs it reserves, at least 1; fix it for byte-identical tokens across machines)."""
    ray = require_ray()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    num_gpus_per_worker = num_gpus_per_worker or 0
    cpus_per_worker = 1 if cpus_per_worker is None else cpus_per_worker
    if num_gpus_per_worker < 0 or cpus_per_worker < 0 or (workers is not None and workers < 1):
        raise InvalidInputError("--workers must be at least 1, and per-worker resources not negative")
    if threads_per_worker is None:
        threads_per_worker = max(1, round(cpus_per_worker))
    started = time.perf_counter()
    root, out_dir, ref = tk.open_output(root, out_dir, model, model_ref, revision, shard_size, batch_size)
    with tk.locked(out_dir):
        p = tk.plan(root, out_dir, shard_size, log)
        result = tk.Result(files=sum(len(g) for g in p.groups), shards=len(p.groups), shards_skipped=len(p.done))
        todo = p.todo
        if todo:
            own = not ray.is_initialized()
            if own:
                ray.init(address=address, include_dashboard=False, log_to_driver=progress,
                         logging_level=logging.INFO if progress else logging.ERROR)
            try:
                _execute(ray, p, todo, model, ref, revision, batch_size, progress, log, result, started,
                         workers, num_gpus_per_worker, cpus_per_worker, threads_per_worker, encoder_cls)
            finally:
                if own:
                    ray.shutdown()
        p.write_canonical()
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


def _execute(ray, p, todo, model, ref, revision, batch_size, progress, log, result, started,
             workers, num_gpus, cpus, threads, encoder_cls) -> None:
    from ray.data import DataContext

    ctx = DataContext.get_current()
    # One block per row (a row is a batch of a shard): each batch streams on to an encoder as soon as
    # it is decoded, and each result to the driver as soon as it is encoded (with Ray's default of
    # 128 MiB, a task's rows travel together: a whole shard's audio at once, results in bursts).
    saved = {"target_max_block_size": 1, "enable_progress_bars": False,  # ours counts files
             "print_on_execution_start": False}
    saved = {k: (getattr(ctx, k), setattr(ctx, k, v))[0] for k, v in saved.items()}
    logger = logging.getLogger("ray.data")
    level = logger.level
    if not progress:
        logger.setLevel(logging.ERROR)
    try:
        _pipeline(ray, p, todo, model, ref, revision, batch_size, progress, log, result, started,
                  workers, num_gpus, cpus, threads, encoder_cls)
    finally:
        for k, v in saved.items():
            setattr(ctx, k, v)
        logger.setLevel(level)


def _pipeline(ray, p, todo, model, ref, revision, batch_size, progress, log, result, started,
              workers, num_gpus, cpus, threads, encoder_cls) -> None:
    workers, cpus = resources(ray, workers, num_gpus, cpus, log)
    dtype = str(model.dtype).replace("torch.", "")
    device = "cuda" if num_gpus > 0 else "cpu"
    root = str(p.root.resolve())

    ds = ray.data.from_items([{"shard": n, "paths": g} for n, g in todo], override_num_blocks=len(todo))
    ds = ds.flat_map(_plan_shard, fn_kwargs={"root": root, "batch_size": batch_size}, num_cpus=DECODE_CPUS)
    ds = ds.map(_load_rows, fn_kwargs={"root": root, "sample_rate": model.sample_rate}, num_cpus=DECODE_CPUS)
    ds = ds.map(
        encoder_cls,
        fn_constructor_kwargs={"model_ref": ref, "revision": revision, "dtype": dtype, "device": device,
                               "threads": threads, "config_sha256": model.config.sha256()},
        compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus, num_gpus=num_gpus or None,
    )

    meta = token_files.header(model, ref, revision)
    bar = tk._progress(sum(len(g) for _, g in todo), progress)
    say = tk.say_with(bar, log)
    committed: set[str] = set()
    try:
        _collect(ds, p, todo, meta, result, started, bar, say, committed)
    except ray.exceptions.RayError as e:
        raise RayJobError(f"the Ray job failed after {len(committed)} of {len(todo)} shard(s) ({_first_line(e)}); "
                          "the shards written are kept: rerun the same command to resume") from e
    finally:
        if bar:
            bar.close()


def _first_line(e: BaseException) -> str:
    """The worker's own exception (`RuntimeError: ...`) from a Ray error's text, else its first line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    for ln in text.splitlines():
        m = re.match(r"([A-Za-z_][\w.]*(?:Error|Exception)): (.*)$", ln.strip())
        if m and not m.group(1).startswith("ray."):
            return f"{m.group(1)}: {m.group(2)}"[:300]
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]


def _collect(ds, p, todo, meta, result, started, bar, say, committed: set) -> None:
    """Gather each shard's batches as they come; commit a shard once it is whole."""
    pending: dict[str, dict[int, tk.Encoded]] = {}
    for row in ds.iter_rows():
        name, index = row["shard"], int(row["batch"])
        if name in committed:  # a retried batch delivered twice
            continue
        got = pending.setdefault(name, {})
        if index in got:
            continue
        got[index] = pickle.loads(row["result"])
        if bar:
            bar.update(int(row["files"]))
        if len(got) == int(row["batches"]):
            enc = tk.Encoded()
            for i in sorted(got):
                enc.update(got[i])
            tk.commit_shard(p, name, enc, meta, result, say)
            committed.add(name)
            del pending[name]
            tk.show_rate(bar, result, started)
    missing = [n for n, _ in todo if n not in committed]
    if missing:
        raise RayJobError(f"Ray finished without {len(missing)} shard(s) ({missing[0]}, ...); rerun to resume")
