"""Corpus tokenization throughput: the single-process engine vs `--engine ray` with 1 and 2 encoders.

    python benchmarks/ray_throughput.py [--model FOLDER|FILE.nemo] [--files 24] [--seconds 5] [--out reports]   (make bench-ray)

Audio-hours tokenized per hour of wall time on one synthetic corpus (speech fixture clips, half at 44.1 kHz so
that decoding resamples), same shard and batch size and 1 torch thread per encoder for all; every Ray output
compared with the local engine's, byte for byte. Model: --model, else the full-size fixture (`make fixtures FULL=1`),
a .nemo converted once into cache/, else that architecture with seeded random weights (speed does not depend on them). The
Ray cluster is local, its start-up timed apart. Writes <out>/ray-cpu-<cpu>.md. Timings on a shared machine are noisy.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]  # parity/ is a repository package; common.py

from common import SR, loadavg, loadavg_text, speech, table, write_atomic  # noqa: E402

from nanocodec import AudioCodecModel  # noqa: E402
from nanocodec.apps import corpus as tk  # noqa: E402
from nanocodec.fileio.hub import resolve  # noqa: E402
from parity.machine import cpu_name, cpu_vendor  # noqa: E402

FULL_NEMO = ROOT / "cache" / "fixtures-full" / "nano0p6_full.nemo"
WORK = ROOT / "cache" / "bench-ray"


def model_folder(arg: str | None) -> tuple[Path, str]:
    """A folder in nanocodec's layout: every Ray actor loads the same one, no actor converts."""
    if arg or FULL_NEMO.exists():
        desc = f"`{arg}`" if arg else "the seeded full-size 0.6 kbps checkpoint (`cache/fixtures-full/nano0p6_full.nemo`, converted)"
        return resolve(arg or FULL_NEMO, cache_dir=ROOT / "cache"), desc
    from nanocodec.presets import DEFAULT_PRESET, PRESETS

    print(f"{FULL_NEMO} is missing (`make fixtures FULL=1`): the full-size architecture with seeded random weights", file=sys.stderr)
    if not (out := WORK / "preset_random").exists():
        torch.manual_seed(0)
        AudioCodecModel(PRESETS[DEFAULT_PRESET].config()).save_pretrained(out)
    return out, f"the full-size `{DEFAULT_PRESET}` architecture with seeded random weights"


def make_corpus(root: Path, files: int, seconds: float) -> float:
    """`files` clips of 4/5 to 6/5 of `seconds`, cut from the speech fixtures with a little seeded noise; odd
    ones at 44.1 kHz PCM_16. Returns the total duration in seconds."""
    rng, total = np.random.default_rng(0), 0.0
    shutil.rmtree(root, ignore_errors=True)
    for i in range(files):
        n = int(SR * seconds * rng.uniform(0.8, 1.2))
        clip = speech(n, offset_s=rng.uniform(0, 16), gain=1.0) + 0.003 * rng.standard_normal(n).astype(np.float32)
        (folder := root / f"spk{i % 4}").mkdir(parents=True, exist_ok=True)
        if i % 2:
            sf.write(folder / f"utt{i:04d}.wav", soxr.resample(clip, SR, 44100), 44100, subtype="PCM_16")
        else:
            sf.write(folder / f"utt{i:04d}.flac", clip, SR, subtype="PCM_16")
        total += n / SR
    return total


def timed_encoder(ray_engine, log_dir: Path):
    """An encode actor that logs the CPU time of each batch into log_dir, emptied here (its thread's: other work on a
    shared machine does not count), so that audio / CPU time is a per-core figure the machine's load does not skew."""
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir()

    class TimedEncoder(ray_engine.Encoder):
        def encode(self, row):
            t = time.thread_time()
            enc = super().encode(row)
            with open(log_dir / f"{os.getpid()}.txt", "a") as f:
                f.write(f"{time.thread_time() - t}\n")
            return enc

    return TimedEncoder


def compare(out: Path, ref: Path) -> str:
    """Every output file (the lock file aside) byte for byte against the reference's: the shards (so every file's
    tokens), the manifest, the error log and the settings."""
    names = sorted(({p.name for p in ref.iterdir()} | {p.name for p in out.iterdir()}) - {tk.LOCK})
    differ = [n for n in names if not ((out / n).is_file() and (ref / n).is_file() and (out / n).read_bytes() == (ref / n).read_bytes())]
    if differ:
        return f"NO: files differing: {differ}"
    return f"yes: {len((ref / tk.MANIFEST).read_text().splitlines())} files' tokens, manifest and every shard byte-identical"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="a model folder or .nemo (default: the full-size fixture, see above)")
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=5.0, help="mean clip length")
    ap.add_argument("--shard-size", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=1, help="default 1: on CPU the fastest per item (reports/bench-cpu-<cpu>.md)")
    ap.add_argument("--workers", default="1,2", help="Ray encoder counts to measure, comma-separated")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every engine (median reported)")
    ap.add_argument("--out", default="reports")
    args = ap.parse_args(argv)

    import ray

    from nanocodec.apps import ray_engine

    torch.set_num_threads(1)  # the local engine: one thread, like each Ray encoder
    WORK.mkdir(parents=True, exist_ok=True)
    folder, model_desc = model_folder(args.model)
    model = AudioCodecModel.from_pretrained(folder)
    corpus = WORK / "corpus"
    audio_s = make_corpus(corpus, args.files, args.seconds)
    kw = dict(model_ref=str(folder), shard_size=args.shard_size, batch_size=args.batch_size, progress=False,
              log=lambda m: print(m, file=sys.stderr))
    load_start, runs, commits, ref = loadavg_text(loadavg()), {}, [], WORK / "out-ref"
    commit_shard = tk.commit_shard

    def timed_commit(*a, **k):  # when the first shard is written: both engines' drivers call tk.commit_shard
        commit_shard(*a, **k)
        commits.append(time.perf_counter())

    tk.commit_shard = timed_commit

    def measure(label, workers, fn, out, log_dir=None) -> None:
        """One engine's run into `out`, compared with the reference unless it is the reference. Encoding CPU time:
        the encode actors' logs in log_dir (Ray), else this thread's (the local engine, decoding included)."""
        shutil.rmtree(out, ignore_errors=True)
        commits.clear()
        t, cpu = time.perf_counter(), time.thread_time()
        res = fn(corpus, out, model, **kw)
        wall, cpu = time.perf_counter() - t, time.thread_time() - cpu
        assert res.encoded == args.files and not res.failed, res
        if log_dir is not None:
            cpu = sum(float(x) for p in log_dir.glob("*.txt") for x in p.read_text().split())
        run = {"wall_s": wall, "rate": audio_s / wall, "first_s": commits[0] - t, "per_core": audio_s / cpu}
        if out != ref:
            run["same"] = compare(out, ref)
        runs.setdefault((label, workers), []).append(run)
        print(f"{label:>6} x{workers}: {wall:7.1f} s, {audio_s / wall:6.2f} audio-h/h (first shard after {run['first_s']:.1f} s)",
              file=sys.stderr)

    # the decode stage alone (read, sha256, decode, resample to the model's rate), one core
    t = time.thread_time()
    items, failed = tk.load_batch(corpus, tk.list_audio(corpus), model.sample_rate, "-")
    decode_rate = audio_s / (time.thread_time() - t)
    assert len(items) == args.files and not failed
    del items
    temp, t = tempfile.mkdtemp(prefix="ray-", dir="/tmp"), time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), address="local", include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1", _temp_dir=temp)
    ray_start = time.perf_counter() - t
    try:
        for r in range(args.rounds):  # interleaved, so that every engine sees the machine's changing load
            measure("local", 1, tk.tokenize, ref if r == 0 else WORK / "out-local")  # the first local run: the reference
            for w in [int(x) for x in args.workers.split(",")]:
                encoder = timed_encoder(ray_engine, log_dir := WORK / f"cpu-ray{w}")
                measure("ray", w, lambda *a, **k: ray_engine.tokenize(*a, workers=w, encoder_cls=encoder, **k), WORK / f"out-ray{w}", log_dir)
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    lines = [
        "# Corpus tokenization on Ray Data: throughput on this CPU", "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `make bench-ray` (benchmarks/ray_throughput.py) "
        f"at commit {commit or 'n/a'}.", "",
        f"- **Machine**: {cpu_name()}, {os.cpu_count()} logical CPUs, no GPU, shared: other work ran during the measurement "
        f"(load average 1/5/15 min {load_start} at the start, {loadavg_text(loadavg())} at the end), so wall-time figures are "
        "noisy (they move by tens of percent from round to round) and lower than on an idle machine.",
        f"- **Model**: {model_desc}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, float32, 1 torch thread "
        "per encoder (and in the local engine).",
        f"- **Corpus**: {args.files} clips, {audio_s:.1f} s of audio in all (about {args.seconds:g} s each; half at 44.1 kHz "
        f"PCM_16, resampled at load), shard size {args.shard_size}, batch size {args.batch_size}.",
        f"- **Ray**: {ray.__version__}, a local cluster on 127.0.0.1 with {os.cpu_count()} CPUs (start-up {ray_start:.1f} s, not "
        "counted below), up during all rounds; with as many encoders as cores they reserve a little less than one CPU each "
        "and share the cores with the decode tasks.",
        f"- **Rounds**: {args.rounds}, the engines interleaved (local, Ray x1, Ray x2, local, ...).",
        f"- **Decode stage alone** (read, sha256, decode, resample; `load_batch` on one core): {decode_rate:.0f} audio-hours per hour.",
        ""]
    med, rows = statistics.median, []
    for (label, workers), rs in runs.items():
        rates, same = [r["rate"] for r in rs], [r["same"] for r in rs if "same" in r]
        verdict = ("(the reference)" if not same else same[0] + (f", in all {len(same)} rounds" if len(same) > 1 else "")
                   if all(x.startswith("yes") for x in same) else "; ".join(same))
        rows.append([label, workers, f"{med(rates):.2f} ({min(rates):.2f}-{max(rates):.2f})", f"{med(r['wall_s'] for r in rs):.1f}",
                     f"{med(r['first_s'] for r in rs):.1f}", f"{med(r['per_core'] for r in rs):.2f}", verdict])
    lines += table(["engine", "encoders", "audio-hours per hour (× real time): median (min-max)", "wall s, median",
                    "first shard written after s, median", "audio-hours per CPU-hour of encoding, median", "same as local engine?"], rows)
    lines += [
        "", "Audio-hours per hour = seconds of audio tokenized ÷ seconds of wall time (the same number as × real time). Wall "
        "time: from the call to the end, Ray actor start-up and model loading included (the first-shard column shows that "
        "start-up; on a long run it is paid once). Per CPU-hour: audio ÷ the CPU time of the threads that encode (Ray: summed "
        "over the encode actors, logged per batch; local: the whole run's thread, decoding included), which the machine's "
        "other load does not inflate: the figure a cluster plan scales by core count.",
        "The equality column compares each output with the first local run's, every file byte for byte (shards, manifest, "
        "error log, settings; the lock file aside).", ""]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    write_atomic(Path(args.out) / f"ray-cpu-{cpu_vendor()}.md", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
