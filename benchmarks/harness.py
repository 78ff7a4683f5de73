"""`make bench`: nanocodec vs NeMo 3.0.0 vs nanocodec-torch 1.0.0 on this CPU, side by side (issue 7).

    .venv/bin/python benchmarks/harness.py [--quick] [options: --help; each also as --bench-<name>, BENCH_ARGS's spelling]

Same weights and input for all three; one worker process per environment (worker.py) forks a child per case that
times its own calls and reports its RSS high-water mark; rounds interleave the implementations, medians; rounds per
case within a time budget. How it measures: benchmarks/README.md; reports: report.py.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
for _p in (str(HERE.parent), str(HERE)):  # the repository's `parity` package; this folder's modules
    if _p not in sys.path:
        sys.path.insert(0, _p)

from common import ISSUE_GFLOP_PER_S, OPS, REPO, Case, batch_items, loadavg  # noqa: E402

CACHE = REPO / "cache" / "bench"
NEMO_FILE = REPO / "cache" / "fixtures-full" / "nano0p6_full.nemo"
PORT_VENV = REPO / "cache" / "bench-venvs" / "port"
PORT_PIP = ["nanocodec-torch==1.0.0", "torch==2.13.0"]  # torch on the same line: pip keeps the CPU build
FULL_GRID = [Case(s, 1) for s in (1, 5, 10, 30, 60)] + [Case(s, b) for b in (4, 16) for s in (1, 5)]
QUICK_GRID = [Case(1, 1), Case(5, 1), Case(1, 4)]
WARM_FULL_S = 4.0  # a case whose call is estimated under this is its own warm-up, else a 1 s call is
# single conv layers of the model's shapes for the CPU's measured peak (kernel 11): decoder residual stages at
# the lengths 10 s of audio gives them, the first also at 60 s, and an encoder stage
PEAK_LAYERS = [("dec stage 1 (432 ch, 60 s)", 432, 750 * 7), ("dec stage 1 (432 ch, 10 s)", 432, 125 * 7),
               ("dec stage 2 (216 ch, 10 s)", 216, 125 * 49), ("dec stage 3 (108 ch, 10 s)", 108, 125 * 294),
               ("dec stage 4 (54 ch, 10 s)", 54, 125 * 882), ("enc stage 4 (192 ch, 10 s)", 192, 125 * 49)]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_order(grid: list) -> list:
    """Batch 1 by length (the headline), then the batches by cost: the estimates learn the speeds on the cheap
    cases first, and a budget cut falls on the batch cases, then on the longest input."""
    return sorted(grid, key=lambda c: (c.batch > 1, c.audio_seconds, c.batch))


def choose_threads(value) -> tuple[int, str]:
    """`auto`: every core when the machine is idle, else one thread. With OpenMP, two threads on a 2-core machine
    that other work keeps busy stall at every op's barrier (a 1 s round trip measured 5-8x slower with 2 threads
    than with 1 under load 7): that would measure the scheduler, not the implementations."""
    if value not in (None, "", "auto"):
        return int(value), "set by --threads"
    cores, load1 = os.cpu_count() or 1, (loadavg() or [0.0])[0]
    if load1 < 0.75:
        return cores, f"auto: 1-min load average {load1:.2f} at the start (idle), all {cores} cores"
    return 1, f"auto: 1-min load average {load1:.2f} at the start (busy machine), 1 thread each"


def parse_ours(spec: str) -> tuple[str, dict]:
    """'dtype=bfloat16,threads=1,chunk_seconds=null,encode.X=V,decode.X=V,load.X=V' -> (label, worker options);
    values are JSON where they parse (null, numbers, booleans). The label is the spec itself: "ours[dtype=bfloat16]"."""
    opts: dict = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        k, _, v = (s.strip() for s in part.partition("="))
        try:
            val = json.loads(v)
        except json.JSONDecodeError:
            val = v
        where, _, name = k.partition(".")
        if name and where in ("encode", "decode", "load"):
            opts.setdefault(f"{where}_kwargs", {})[name] = val
        elif k == "chunk_seconds":  # both calls' keyword; null: whole-input processing
            for where in ("encode", "decode"):
                opts.setdefault(f"{where}_kwargs", {})[k] = val
        elif k in ("dtype", "threads"):
            opts[k] = val
        else:
            raise SystemExit(f"--ours: unknown option {k!r} (dtype, threads, chunk_seconds, encode.X, decode.X, load.X)")
    return (f"ours[{spec.strip()}]" if opts else "ours"), opts


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])

    def opt(name, **kw):
        ap.add_argument(f"--{name}", f"--bench-{name}", **kw)

    opt("quick", action="store_true", help="smoke run: 1 s batch 1, then 5 s batch 1 and 1 s batch 4 as a 60 s budget allows")
    opt("ours", action="append", help="our model's options, e.g. dtype=bfloat16,threads=1 (repeat: several variants)")
    opt("impls", default="ours,nemo,port", help="comma list of ours,nemo,port")
    opt("threads", default="auto", help="threads per implementation, or auto (default)")
    opt("budget-s", type=float, help="time for the measurements in s (default 1080, QUICK 60; 0: none)")
    opt("max-rounds", type=int, help="rounds per case at most (default 9, QUICK 3)")
    opt("grid", help="cases as SECONDSxBATCH, comma separated (default: issue 7's grid)")
    opt("out", help="report folder (default reports/, QUICK: cache/bench/report-quick)")
    a = ap.parse_args(argv)
    a.grid = [Case.parse(g) for g in a.grid.split(",")] if a.grid else list(QUICK_GRID if a.quick else FULL_GRID)
    a.ours = [parse_ours(s) for s in a.ours] if a.ours else [("ours", {})]
    a.impls = [i.strip() for i in a.impls.split(",") if i.strip()]
    a.threads, a.threads_why = choose_threads(a.threads)
    a.budget_s = a.budget_s if a.budget_s is not None else (60.0 if a.quick else 1080.0)
    a.max_rounds = a.max_rounds or (3 if a.quick else 9)
    a.out = Path(a.out) if a.out else (CACHE / "report-quick" if a.quick else REPO / "reports")
    return a


# -- preparation: environments, weights, inputs (cached under cache/, git-ignored) ---------------------------------
def ensure_port_env() -> Path:
    py, stamp = PORT_VENV / "bin" / "python", PORT_VENV / ".installed"
    if not (stamp.exists() and py.exists()):
        log(f"creating {PORT_VENV} ({' '.join(PORT_PIP)})")
        PORT_VENV.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([os.environ.get("BENCH_PYTHON", "python3"), "-m", "venv", str(PORT_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PORT_PIP], check=True)
        version = subprocess.run([str(py), "-c", "import torch, nanocodec_torch; print(torch.__version__)"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        if "+cu" in version:
            raise SystemExit(f"{PORT_VENV}: pip installed a CUDA torch ({version}); remove the folder and retry")
        stamp.write_text(" ".join(PORT_PIP) + "\n")
    return py


def from_nemo(out: Path, make) -> Path:
    """`out`, made by make(out) unless it was made from this .nemo (its size and mtime, in a stamp beside it)."""
    st, stamp = NEMO_FILE.stat(), out.parent / f"{out.name}.source"
    key = f"{NEMO_FILE.name} {st.st_size} {st.st_mtime_ns}"
    if not (out.exists() and stamp.exists() and stamp.read_text() == key):
        out.parent.mkdir(parents=True, exist_ok=True)
        log(f"{NEMO_FILE.name} -> {out}")
        make(out)
        stamp.write_text(key)
    return out


def convert_ours(out: Path) -> None:
    subprocess.run([sys.executable, "-m", "convert", str(NEMO_FILE), str(out), "--overwrite"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)


def export_port(out: Path) -> None:
    """The .nemo's state dict (NeMo's key names, weight norm's g/v unfolded) as safetensors, which
    nanocodec-torch's `load_safetensors_weights` reads."""
    import torch
    from safetensors.torch import save_file

    with tarfile.open(NEMO_FILE, "r:*") as tar:
        member = next(m for m in tar.getmembers() if m.isfile() and m.name.rsplit("/", 1)[-1] == "model_weights.ckpt")
        state = torch.load(io.BytesIO(tar.extractfile(member).read()), map_location="cpu", weights_only=True)
    keep = {k: v.contiguous() for k, v in state.items() if k.startswith(("audio_encoder.", "audio_decoder.", "vector_quantizer."))}
    save_file(keep, str(out.with_suffix(".tmp")), metadata={"source": NEMO_FILE.name})
    os.replace(out.with_suffix(".tmp"), out)


def ensure_input(case: Case) -> Path:
    """[batch, samples] float32, raw, as every worker reads it (common.batch_items)."""
    import numpy as np

    path = CACHE / "inputs" / f"{case.frames}f-b{case.batch}.f32"
    if not (path.exists() and path.stat().st_size == 4 * case.batch * case.samples):
        path.parent.mkdir(parents=True, exist_ok=True)
        np.stack(batch_items(case)).astype(np.float32).tofile(path)
    return path


# -- worker processes ----------------------------------------------------------------------------------------------
class WorkerError(RuntimeError):
    pass


class Zygote:
    """One implementation in its environment, speaking worker.py's JSON lines; forks a child per case. Reads
    block: a hung case process ends itself (a request's limit_s is an alarm in it) and the zygote reports that."""

    def __init__(self, label: str, impl: str, python: Path, weights: Path, opts: dict, threads: int):
        self.label, self.threads = label, int(opts.get("threads", threads))
        (CACHE / "logs").mkdir(parents=True, exist_ok=True)
        self.log_path = CACHE / "logs" / f"{label.replace('/', '_')}.log"
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(OMP_NUM_THREADS=str(self.threads), MKL_NUM_THREADS=str(self.threads), PYTHONUNBUFFERED="1")
        opts = json.dumps({k: v for k, v in opts.items() if k != "threads"})
        self.proc = subprocess.Popen([str(python), str(HERE / "worker.py"), impl, str(weights), opts],
                                     cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log_path, "wb"), env=env)
        self.child = False

    def read(self) -> dict:
        if not (line := self.proc.stdout.readline()):
            raise WorkerError(f"{self.label}: worker exited ({self.proc.wait()}); log tail:\n"
                              + self.log_path.read_text(errors="replace")[-2000:])
        return json.loads(line)

    def request(self, obj: dict) -> dict:
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()
        return self.checked(self.read())

    def checked(self, reply: dict) -> dict:
        if "child_exit" in reply:  # the case process died instead of answering
            self.child = False
            why = ", its time limit" if reply["child_exit"] == -14 else ""  # -SIGALRM
            raise WorkerError(f"{self.label}: case process died (exit {reply['child_exit']}{why}); see {self.log_path}")
        if not reply.get("ok"):
            raise WorkerError(f"{self.label}: {reply.get('error', '?')}\n{reply.get('traceback', '')}")
        return reply

    def fork(self) -> dict:
        reply = self.request({"cmd": "fork", "threads": self.threads})
        self.child = True
        return reply

    def end_child(self) -> dict:
        """The child's peak RSS, then the zygote's word that it exited."""
        reply = self.request({"cmd": "end"})
        self.child, reply["child_exit"] = False, self.read().get("child_exit")
        return reply

    def close(self) -> None:
        """End of input ends the worker, and a live child with it: both read the same pipe."""
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


# -- the run -------------------------------------------------------------------------------------------------------
def machine() -> dict:
    from parity.machine import cpu_name, cpu_vendor  # the vendor names the report; it chooses nothing

    info = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in Path("/proc/cpuinfo").read_text().splitlines())}
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")))
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile") if f in info.get("flags", "").split()]
    return {"cpu": cpu_name(), "vendor": cpu_vendor(), "logical_cpus": os.cpu_count(), "isa": isa, "mem_gib": round(mem / 2**20, 1),
            "kernel": platform.release()}


class Bench:
    """Owns the workers and the run's record (`data`: the report's JSON); `measure(case)` runs one case."""

    def __init__(self, cfg: argparse.Namespace):
        self.cfg, self.zygotes, self.t_start = cfg, {}, time.time()
        self.measured: dict[str, dict] = {}  # label -> {Case: median round trip s}
        config = {"quick": cfg.quick, "grid": [c.key for c in cfg.grid], "threads": cfg.threads, "threads_why": cfg.threads_why,
                  "ours_variants": [o for _, o in cfg.ours], "budget_s": cfg.budget_s, "max_rounds": cfg.max_rounds,
                  "warm_full_s": WARM_FULL_S}
        # the model's cost is a property of the model, not of the run: counted once (common.ISSUE_GFLOP_PER_S)
        flops = {"method": "torch.utils.flop_counter over NeMo's encode and decode, 2 FLOP per multiply-add; counted once, issue 7",
                 "gflop_per_audio_second": dict(ISSUE_GFLOP_PER_S)}
        self.data = {"generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(), "loadavg": {"start": loadavg()},
                     "config": config, "implementations": {}, "threads": {}, "flops": flops, "conv_peak": None, "plan": [],
                     "raw": {}, "errors": {}}

    @property
    def labels(self) -> list[str]:
        return list(self.zygotes)

    def start(self) -> None:
        cfg, t0 = self.cfg, time.perf_counter()
        if not NEMO_FILE.exists():
            raise SystemExit(f"{NEMO_FILE} is missing: build it with `make fixtures FULL=1` (the NeMo oracle env)")
        oracle = Path(os.environ.get("ORACLE_PY", REPO / "parity" / "oracle" / ".venv" / "bin" / "python"))
        if "nemo" in cfg.impls and not oracle.exists():
            raise SystemExit(f"{oracle} missing: `make oracle` builds the NeMo environment")
        specs = [(label, "ours", Path(sys.executable), from_nemo(CACHE / "ours", convert_ours), o)
                 for label, o in cfg.ours if "ours" in cfg.impls]
        specs += [("nemo", "nemo", oracle, NEMO_FILE, {})] if "nemo" in cfg.impls else []
        specs += [("port", "port", ensure_port_env(), from_nemo(CACHE / "port" / "model.safetensors", export_port), {})] \
            if "port" in cfg.impls else []
        for case in cfg.grid + [Case(1, 1)]:  # 1 s batch 1: the long cases' warm-up
            ensure_input(case)
        log("loading models (all at once, not timed): " + ", ".join(s[0] for s in specs))
        self.zygotes = {label: Zygote(label, impl, py, w, opts, cfg.threads) for label, impl, py, w, opts in specs}
        for label, z in list(self.zygotes.items()):
            try:
                info = z.checked(z.read())["info"]
            except WorkerError as e:  # the run goes on without it; the report says why
                self.data["errors"][label] = str(e)
                log(f"{label}: FAILED to load: {e}")
                z.close()
                del self.zygotes[label]
                continue
            log(f"{label}: {info['package']}, torch {info['torch']}, loaded in {info['load_s']:.1f} s, RSS {info['rss_after_load_mib']:.0f} MiB")
            self.data["implementations"][label], self.data["threads"][label] = info, z.threads
        if not self.zygotes:
            raise SystemExit("no implementation loaded")
        self.data["wall_s"] = {"setup": time.perf_counter() - t0}

    def close(self) -> None:
        for z in self.zygotes.values():
            z.close()
        self.data["loadavg"]["end"] = loadavg()
        self.data.setdefault("wall_s", {"setup": 0.0})["total"] = time.time() - self.t_start

    # -- the time budget -------------------------------------------------------------------------
    def est_call(self, label: str, case: Case) -> float:
        """A round trip's time, scaled by audio-seconds from this implementation's longest measured case not longer
        than this one (else its shortest); before it has one, at the slowest speed any has shown, else real time.
        The cost per audio-second rises with length, so a long case can take longer than this: its rounds then stop
        early (measure) and later cases see the budget that is left."""
        if not (done := self.measured.get(label)):
            speeds = [c.audio_seconds / t for d in self.measured.values() for c, t in d.items()]
            return case.audio_seconds / min(speeds, default=1.0) + 0.05
        shorter = [c for c in done if c.audio_seconds <= case.audio_seconds]
        ref = max(shorter, key=lambda c: c.audio_seconds) if shorter else min(done, key=lambda c: c.audio_seconds)
        return done[ref] * case.audio_seconds / ref.audio_seconds + 0.05

    def est_case(self, case: Case, rounds: int) -> float:
        """Warm-up + rounds of every implementation, + 0.5 s each for the fork, the input and the end."""
        total = 0.0
        for label in self.labels:
            call = self.est_call(label, case)
            total += (call if call <= WARM_FULL_S else self.est_call(label, Case(1, 1))) + rounds * call + 0.5
        return total

    def budget_left(self) -> float:
        return math.inf if self.cfg.budget_s <= 0 else self.cfg.budget_s - (time.time() - self.t_measure)

    def plan(self, case: Case, remaining: list) -> int:
        """Rounds for `case`: 0 (skipped, and reported) when one round does not fit the budget left; else one, plus
        extra rounds from its equal share of the slack, the budget beyond one round of this and every later case.
        Later cases thus keep their first round, and the cheap cases, run first, get the most rounds."""
        budget = self.budget_left()
        if math.isinf(budget):
            return self.cfg.max_rounds
        if self.est_case(case, 1) > budget:
            return 0
        slack = budget - sum(self.est_case(c, 1) for c in [case] + remaining)
        per_round = self.est_case(case, 2) - self.est_case(case, 1)
        return min(self.cfg.max_rounds, 1 + max(0, int(slack / (1 + len(remaining)) / per_round)))

    # -- a case ----------------------------------------------------------------------------------
    def measure(self, case: Case, remaining: list) -> dict:
        """One case: a child per implementation, a warm-up call in each, the planned rounds interleaved, peak RSS."""
        rounds = self.plan(case, remaining)
        est = self.est_case(case, max(rounds, 1))
        self.data["plan"].append({"case": case.key, "rounds": rounds, "est_s": est, "budget_left_s": self.budget_left()})
        res = self.data["raw"][case.key] = {
            "case": case.key, "seconds": case.seconds, "batch": case.batch, "frames": case.frames, "rounds": rounds,
            "audio_seconds_per_item": case.duration, "impl": {}, "order": [], "loadavg_before": loadavg(), "started": time.time()}
        if rounds == 0:
            res["skipped"] = f"over the time budget (estimated {est:.0f} s, {self.budget_left():.0f} s left)"
            log(f"{case.key}: skipped, {res['skipped']}")
            return res
        log(f"{case.key}: {rounds} round(s), estimated {est:.0f} s, budget left {self.budget_left():.0f} s")
        outdir = CACHE / "outputs" / case.key
        outdir.mkdir(parents=True, exist_ok=True)
        limit = max(600.0, 20 * max(self.est_call(lb, case) for lb in self.labels))  # a hung call's end, not a budget
        req = {"cmd": "rt", "input": str(ensure_input(case)), "batch": case.batch, "samples": case.samples, "limit_s": limit}
        short = {**req, "input": str(ensure_input(Case(1, 1))), "batch": 1, "samples": Case(1, 1).samples}
        live = []
        for label, z in self.zygotes.items():
            entry = res["impl"][label] = {op: [] for op in OPS} | {"errors": []}
            try:
                entry["child"] = z.fork()
                warm = req if self.est_call(label, case) <= WARM_FULL_S else short  # threads, lazy init
                entry["warmup"] = [z.request(warm)["roundtrip"]]
                live.append(label)
            except WorkerError as e:
                entry["errors"].append(str(e))
        t_rounds = time.time()
        for i in range(rounds):
            if i and (time.time() - t_rounds) / i > self.budget_left():
                res["stopped_early"] = f"after {i} of {rounds} rounds: the next would overrun the budget"
                log(f"{case.key}: {res['stopped_early']}")
                break
            res["order"].append([lb for lb in (self.labels[(i + k) % len(self.labels)] for k in range(len(self.labels))) if lb in live])
            for label in res["order"][-1]:
                entry = res["impl"][label]
                save = {"save": str(outdir / label.replace("/", "_"))} if i == 0 else {}  # the outputs agreement() compares
                try:
                    reply = self.zygotes[label].request(req | save)
                except WorkerError as e:
                    entry["errors"].append(str(e))
                    live.remove(label)
                    continue
                for op in OPS:
                    entry[op].append(reply[op])
        for label, z in self.zygotes.items():
            entry = res["impl"][label]
            try:
                entry["memory"] = z.end_child() if z.child else None
            except WorkerError as e:
                entry["errors"].append(str(e))
            if entry["roundtrip"]:
                self.measured.setdefault(label, {})[case] = statistics.median(entry["roundtrip"])
        res.update(rounds_done=len(res["order"]), elapsed_s=time.time() - res["started"], loadavg_after=loadavg(),
                   agreement=agreement(outdir, [lb for lb in self.labels if res["impl"][lb]["roundtrip"]]))
        log(f"{case.key}: round trip medians: " + ", ".join(f"{lb} {d[case] * 1000:.0f} ms" for lb, d in self.measured.items()
                                                            if case in d) + f" ({res['elapsed_s']:.0f} s)")
        return res

    def run(self) -> None:
        self.data["conv_peak"] = pk = conv_peak(self.cfg.threads, 3 if self.cfg.quick else 5)
        log(f"measured peak: {pk['peak_gflops']:.0f} GFLOP/s ({pk['peak_layer']})")
        self.t_measure = time.time()  # the budget is the cases'
        order = run_order(self.cfg.grid)
        for i, case in enumerate(order):
            self.measure(case, order[i + 1:])


def conv_peak(threads: int, reps: int) -> dict:
    """GFLOP/s of single F.conv1d layers of the model's shapes (float32, seeded): the CPU's peak for this work."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    layers, g = [], torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for name, ch, length in PEAK_LAYERS:
            x, w = torch.randn(1, ch, length + 10, generator=g), torch.randn(ch, ch, 11, generator=g) / (ch * 11) ** 0.5
            times = []
            for _ in range(2 + reps):  # two warm-up calls
                t = time.perf_counter()
                F.conv1d(x, w)
                times.append(time.perf_counter() - t)
            flop, med = 2.0 * ch * ch * 11 * length, statistics.median(times[2:])
            layers.append({"name": name, "c_in": ch, "c_out": ch, "kernel": 11, "length": length, "flop": flop, "times": times[2:],
                           "median_s": med, "gflops": flop / med / 1e9})
    best = max(layers, key=lambda s: s["gflops"])
    return {"measured_in": "ours", "threads": threads, "layers": layers, "peak_gflops": best["gflops"], "peak_layer": best["name"]}


def agreement(outdir: Path, labels: list) -> dict:
    """Each implementation against NeMo (else the first) on the case's first call: the fraction of identical token
    values, the decoded audio's SNR and max |diff|. A check that all ran the same weights on the same input."""
    import numpy as np

    def load(label: str, ext: str, dtype) -> "np.ndarray":
        return np.fromfile(str(outdir / label.replace("/", "_")) + ext, dtype=dtype)

    if not labels:
        return {}
    ref = "nemo" if "nemo" in labels else labels[0]
    ref_tokens, ref_audio, out = load(ref, ".tokens.i32", np.int32), load(ref, ".audio.f32", np.float32).astype(np.float64), {"reference": ref}
    for label in (lb for lb in labels if lb != ref):
        tokens, audio = load(label, ".tokens.i32", np.int32), load(label, ".audio.f32", np.float32)
        n = min(audio.size, ref_audio.size)
        err = audio[:n] - ref_audio[:n]
        noise = float((err ** 2).sum())
        out[label] = {"tokens_equal": float((tokens == ref_tokens).mean()) if tokens.shape == ref_tokens.shape else None,  # None: counts differ
                      "snr_db": 10 * math.log10(float((ref_audio[:n] ** 2).sum()) / noise) if noise > 0 else math.inf,
                      "max_abs_diff": float(np.abs(err).max())}
    return out


def main(argv=None) -> int:
    cfg = parse_args(argv)
    bench = Bench(cfg)
    try:
        bench.start()
        bench.run()
    finally:
        bench.close()
        if bench.data["implementations"]:
            from report import write_reports

            for p in write_reports(bench.data, cfg.out):
                print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
