"""Side-by-side CPU benchmark driver: nanocodec (this checkout) vs NeMo 3.0.0 vs nanocodec-torch 1.0.0.

Used by benchmarks/test_bench.py (`make bench`, pytest-benchmark) and runnable alone:

    .venv/bin/python benchmarks/harness.py [--quick] [--ours dtype=bfloat16,threads=1] [--budget-s 1080]

What it does (issue 7):
  * the same weights for all three: the seeded full-size 0.6 kbps NeMo checkpoint
    cache/fixtures-full/nano0p6_full.nemo; converted with `python -m convert` for ours, exported to a
    safetensors file with NeMo's key names for nanocodec-torch (its own loader folds weight norm),
    restored by NeMo itself for NeMo;
  * the same input: speech (the committed clips, tiled), whole frames, written once to a raw file;
  * one worker process per environment (benchmarks/worker.py): ours in .venv, NeMo in the oracle venv,
    nanocodec-torch in cache/bench-venvs/port. Each loads its model once, then forks one child per case
    that times itself (time.perf_counter around the call) and reports its own RSS high-water mark;
  * strictly one process computes at a time; rounds interleave the implementations (rotating order);
    medians are reported;
  * a time budget: rounds per case are planned from the speeds measured so far (water-filling, the
    cheapest cases get the most rounds); a case that cannot get one round in the budget is skipped
    and reported as such.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the repository's `parity` package (machine facts), as pytest's rootdir gives it
    sys.path.insert(1, str(REPO))
CACHE = REPO / "cache" / "bench"
NEMO_FILE = REPO / "cache" / "fixtures-full" / "nano0p6_full.nemo"
WORKER = REPO / "benchmarks" / "worker.py"
PORT_VENV = REPO / "cache" / "bench-venvs" / "port"
PORT_PIP = ["nanocodec-torch==1.0.0", "torch==2.13.0"]
SR = 22050
SPF = 1764
FPS = SR / SPF  # 12.5
SPEECH = ["speech_11s", "speech_4s", "speech_0p5s"]

# the model's cost quoted in issue 7 (GFLOP per audio-second); the run recounts it with NeMo
ISSUE_GFLOP_PER_S = {"encode": 27.95, "decode": 34.29}

# conv layers of the model's shapes for the peak measurement: decoder residual convs (kernel 11) at
# the lengths 10 s of audio gives each stage, the first stage also at 60 s, and an encoder stage
PEAK_LAYERS = [
    {"name": "dec stage 1 (432 ch, 60 s)", "c_in": 432, "c_out": 432, "kernel": 11, "length": 750 * 7},
    {"name": "dec stage 1 (432 ch, 10 s)", "c_in": 432, "c_out": 432, "kernel": 11, "length": 125 * 7},
    {"name": "dec stage 2 (216 ch, 10 s)", "c_in": 216, "c_out": 216, "kernel": 11, "length": 125 * 49},
    {"name": "dec stage 3 (108 ch, 10 s)", "c_in": 108, "c_out": 108, "kernel": 11, "length": 125 * 294},
    {"name": "dec stage 4 (54 ch, 10 s)", "c_in": 54, "c_out": 54, "kernel": 11, "length": 125 * 882},
    {"name": "enc stage 4 (192 ch, 10 s)", "c_in": 192, "c_out": 192, "kernel": 11, "length": 125 * 49},
]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    seconds: float
    batch: int

    @property
    def frames(self) -> int:
        return math.ceil(self.seconds * FPS - 1e-9)

    @property
    def samples(self) -> int:
        return self.frames * SPF

    @property
    def duration(self) -> float:  # audio seconds per item (whole frames)
        return self.samples / SR

    @property
    def audio_seconds(self) -> float:  # all items
        return self.duration * self.batch

    @property
    def key(self) -> str:
        return f"{self.seconds:g}s-b{self.batch}"


FULL_GRID = [Case(s, 1) for s in (1, 5, 10, 30, 60)] + [Case(s, b) for b in (4, 16) for s in (1, 5)]
QUICK_GRID = [Case(1, 1), Case(1, 4), Case(5, 1)]
OPS = ("encode", "decode", "roundtrip")


def run_order(grid: list) -> list:
    """Batch 1 by length (the headline), then the batches by cost: the planner learns the speeds on
    the cheap cases first, and a budget cut falls on the batch cases, then the longest input."""
    return sorted(grid, key=lambda c: (c.batch > 1, c.audio_seconds, c.batch))


def choose_threads(value) -> tuple[int, str]:
    """`auto` (the default): every core when the machine is idle, else one thread. With OpenMP, two
    threads on a 2-core machine that other work keeps busy stall at every op's barrier (a 1 s round
    trip measured 5-8x slower with 2 threads than with 1 under load 7), which would measure the
    scheduler rather than the implementations."""
    cores = os.cpu_count() or 1
    if value not in (None, "", "auto"):
        return int(value), "set by --threads"
    la = loadavg()
    load1 = la[0] if la else 0.0
    if load1 < 0.75:
        return cores, f"auto: 1-min load average {load1:.2f} at the start (idle), all {cores} cores"
    return 1, f"auto: 1-min load average {load1:.2f} at the start (busy machine), 1 thread each"


def parse_ours(spec: str) -> dict:
    """'dtype=bfloat16,threads=1,chunk_seconds=10,encode.foo=1' -> worker options."""
    opts: dict = {}
    for part in filter(None, (p.strip() for p in spec.replace(";", ",").split(","))):
        k, _, v = part.partition("=")
        k = k.strip()
        try:
            val = json.loads(v)
        except json.JSONDecodeError:
            val = v.strip()
        if k.startswith(("encode.", "decode.", "load.")):
            where, _, name = k.partition(".")
            opts.setdefault({"encode": "encode_kwargs", "decode": "decode_kwargs", "load": "load_kwargs"}[where], {})[name] = val
        elif k in ("dtype", "threads", "chunk_seconds"):
            opts[k] = val
        else:
            raise SystemExit(f"--ours: unknown option {k!r} (dtype, threads, chunk_seconds, encode.X, decode.X, load.X)")
    return opts


def ours_label(opts: dict, index: int) -> str:
    if index == 0 and not opts:
        return "ours"
    flat = [f"{k}={v}" for k, v in opts.items() if not isinstance(v, dict)]
    flat += [f"{k.split('_')[0]}.{n}={v}" for k, d in opts.items() if isinstance(d, dict) for n, v in d.items()]
    return "ours[" + ",".join(flat) + "]" if flat else f"ours#{index}"


@dataclass
class Config:
    quick: bool = False
    grid: list = field(default_factory=list)
    ours: list = field(default_factory=lambda: [{}])  # one options dict per ours variant
    impls: tuple = ("ours", "nemo", "port")
    threads: int = os.cpu_count() or 1
    threads_why: str = "default"
    budget_s: float = 1080.0
    max_rounds: int = 9
    warm_full_s: float = 4.0  # a case whose call is estimated under this gets a full warm-up call
    peak_reps: int = 5
    out: Path = REPO / "reports"
    oracle_py: Path = Path(os.environ.get("ORACLE_PY", REPO / "parity" / "oracle" / ".venv" / "bin" / "python"))
    ours_py: Path = Path(sys.executable)

    @classmethod
    def from_pytest(cls, config) -> "Config":
        o = config.getoption
        return cls.from_args(quick=o("--bench-quick"), ours=o("--bench-ours"), impls=o("--bench-impls"),
                             threads=o("--bench-threads"), budget_s=o("--bench-budget-s"),
                             max_rounds=o("--bench-max-rounds"), out=o("--bench-out"), grid=o("--bench-grid"))

    @classmethod
    def from_args(cls, quick=False, ours=None, impls=None, threads=None, budget_s=None, max_rounds=None, out=None, grid=None):
        c = cls(quick=bool(quick))
        c.grid = list(QUICK_GRID if quick else FULL_GRID)
        if grid:
            c.grid = [Case(float(s), int(b)) for s, b in (g.split("x") for g in grid.split(","))]
        if ours:
            c.ours = [parse_ours(s) for s in ours]
        if impls:
            c.impls = tuple(i.strip() for i in impls.split(",") if i.strip())
        c.threads, c.threads_why = choose_threads(threads)
        c.budget_s = float(budget_s) if budget_s is not None else (60.0 if quick else 1080.0)
        c.max_rounds = int(max_rounds) if max_rounds else (3 if quick else 9)
        c.peak_reps = 3 if quick else 5
        c.out = Path(out) if out else (CACHE / "report-quick" if quick else REPO / "reports")
        return c


# ----------------------------------------------------------------------------------------------
# preparation: environments, weights, inputs
# ----------------------------------------------------------------------------------------------
def ensure_port_env() -> Path:
    py = PORT_VENV / "bin" / "python"
    stamp = PORT_VENV / ".installed"
    if stamp.exists() and py.exists():
        return py
    log(f"creating {PORT_VENV} ({' '.join(PORT_PIP)})")
    PORT_VENV.parent.mkdir(parents=True, exist_ok=True)
    base = os.environ.get("BENCH_PYTHON", "python3")
    subprocess.run([base, "-m", "venv", str(PORT_VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    # torch pinned on the same line, so pip keeps the CPU build
    subprocess.run([str(py), "-m", "pip", "install", "-q", *PORT_PIP], check=True)
    out = subprocess.run([str(py), "-c", "import torch, nanocodec_torch; print(torch.__version__)"],
                         check=True, capture_output=True, text=True).stdout.strip()
    if "+cu" in out:
        raise SystemExit(f"{PORT_VENV}: pip installed a CUDA torch ({out}); remove the folder and retry")
    stamp.write_text(" ".join(PORT_PIP) + "\n")
    return py


def _stamp_of(path: Path) -> str:
    st = path.stat()
    return f"{path.name} {st.st_size} {st.st_mtime_ns}"


def ensure_ours_weights(ours_py: Path) -> Path:
    out = CACHE / "ours"
    stamp = CACHE / "ours.source"
    if out.joinpath("model.safetensors").exists() and stamp.exists() and stamp.read_text() == _stamp_of(NEMO_FILE):
        return out
    log(f"converting {NEMO_FILE.name} with `python -m convert` -> {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(ours_py), "-m", "convert", str(NEMO_FILE), str(out), "--overwrite"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)
    stamp.write_text(_stamp_of(NEMO_FILE))
    return out


def ensure_port_weights() -> Path:
    """The .nemo's state dict (NeMo key names, weight-norm g/v unfolded) as safetensors: the layout
    nanocodec-torch's `load_safetensors_weights` reads (it folds g/v itself)."""
    out = CACHE / "port" / "model.safetensors"
    stamp = CACHE / "port.source"
    if out.exists() and stamp.exists() and stamp.read_text() == _stamp_of(NEMO_FILE):
        return out
    import torch
    from safetensors.torch import save_file

    log(f"exporting {NEMO_FILE.name}'s state dict (NeMo key names) -> {out}")
    with tarfile.open(NEMO_FILE, "r:*") as tar:
        member = next(m for m in tar.getmembers() if m.isfile() and m.name.rsplit("/", 1)[-1] == "model_weights.ckpt")
        state = torch.load(io.BytesIO(tar.extractfile(member).read()), map_location="cpu", weights_only=True)
    keep = {k: v.contiguous() for k, v in state.items() if k.startswith(("audio_encoder.", "audio_decoder.", "vector_quantizer."))}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file(keep, str(tmp), metadata={"source": NEMO_FILE.name})
    os.replace(tmp, out)
    stamp.write_text(_stamp_of(NEMO_FILE))
    return out


def speech_pool():
    import numpy as np
    import soundfile as sf

    clips = []
    for name in SPEECH:
        x, sr = sf.read(REPO / "tests" / "fixtures" / "audio" / f"{name}.wav", dtype="float32", always_2d=False)
        assert sr == SR, (name, sr)
        clips.append(x)
    return np.concatenate(clips).astype(np.float32)


def ensure_input(case: Case) -> Path:
    """[batch, samples] float32, raw: speech tiled to length; item i starts 0.77*i s further in."""
    import numpy as np

    path = CACHE / "inputs" / f"{case.frames}f-b{case.batch}.f32"
    if path.exists() and path.stat().st_size == 4 * case.batch * case.samples:
        return path
    pool = speech_pool()
    out = np.empty((case.batch, case.samples), dtype=np.float32)
    for i in range(case.batch):
        start = int(0.77 * SR * i) % len(pool)
        idx = (start + np.arange(case.samples)) % len(pool)
        out[i] = pool[idx] * (0.9 - 0.03 * (i % 7))
    path.parent.mkdir(parents=True, exist_ok=True)
    out.tofile(path)
    return path


# ----------------------------------------------------------------------------------------------
# worker processes
# ----------------------------------------------------------------------------------------------
class WorkerError(RuntimeError):
    pass


class Zygote:
    """One implementation in its environment; forks a child per case (see worker.py)."""

    def __init__(self, label: str, impl: str, python: Path, weights: Path, opts: dict, threads: int):
        self.label, self.impl, self.opts = label, impl, opts
        self.threads = int(opts.get("threads", threads))
        logs = CACHE / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"{label.replace('/', '_')}.log"
        env = dict(os.environ)
        env.update({"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
                    "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"})
        env.pop("PYTHONPATH", None)
        worker_opts = {k: v for k, v in opts.items() if k != "threads"}
        self.proc = subprocess.Popen(
            [str(python), str(WORKER), "--impl", impl, "--weights", str(weights), "--opts", json.dumps(worker_opts)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(self.log_path, "wb"), env=env,
        )
        self.info: dict | None = None
        self.in_child = False
        self.child_pid: int | None = None
        self._buf = bytearray()

    def _read(self, timeout: float | None = None) -> dict:
        """The next reply line (own buffering on the raw pipe, so select() sees every pending byte)."""
        fd = self.proc.stdout.fileno()
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buf:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:  # a hung case process: kill it; the zygote then reports its exit
                if self.child_pid:
                    os.kill(self.child_pid, signal.SIGKILL)
                raise WorkerError(f"{self.label}: no answer in {timeout:.0f} s; case process killed")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                code = self.proc.wait()
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise WorkerError(f"{self.label}: worker exited ({code}); log tail:\n{tail}")
            self._buf += chunk
        line, _, rest = bytes(self._buf).partition(b"\n")
        self._buf = bytearray(rest)
        return json.loads(line)

    def request(self, obj: dict, timeout: float | None = None) -> dict:
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()
        try:
            reply = self._read(timeout)
        except WorkerError:
            if self.child_pid:  # collect the zygote's report of the killed child
                self.in_child, self.child_pid = False, None
                try:
                    self._read(60)
                except WorkerError:
                    pass
            raise
        if "child_exit" in reply:  # the child died instead of answering
            self.in_child, self.child_pid = False, None
            raise WorkerError(f"{self.label}: case process died (exit {reply['child_exit']}); see {self.log_path}")
        return reply

    def wait_ready(self) -> dict:
        reply = self._read()
        if not reply.get("ok"):
            raise WorkerError(f"{self.label}: {reply.get('error')}\n{reply.get('traceback', '')}")
        self.info = reply["info"]
        return self.info

    def fork(self) -> dict:
        reply = self.request({"cmd": "fork", "threads": self.threads}, timeout=300)
        if not reply.get("ok"):
            raise WorkerError(f"{self.label}: fork failed: {reply}")
        self.in_child = True
        self.child_pid = reply.get("pid")
        return reply

    def end_child(self) -> dict:
        reply = self.request({"cmd": "end"})
        done = self._read()  # the zygote's child_exit
        self.in_child, self.child_pid = False, None
        reply["child_exit"] = done.get("child_exit")
        return reply

    def abandon_child(self) -> None:
        if self.in_child:
            try:
                self.end_child()
            except Exception:
                pass

    def close(self) -> None:
        try:
            self.abandon_child()
            if self.proc.poll() is None:
                self.proc.stdin.write(b'{"cmd": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
        except Exception:
            if self.proc.poll() is None:
                self.proc.kill()


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------
def loadavg() -> list:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def machine() -> dict:
    cpu, flags, cores = platform.processor(), [], os.cpu_count()
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile") if f in flags]
    from parity.machine import cpu_vendor  # names the report (bench-cpu-<vendor>); chooses nothing

    return {"cpu": cpu, "vendor": cpu_vendor(), "logical_cpus": cores, "isa": isa, "mem_gib": mem,
            "kernel": platform.release()}


class Bench:
    """Owns the workers and the measurements; `measure(case)` runs one case for every implementation."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.zygotes: dict[str, Zygote] = {}
        self.results: dict[str, dict] = {}
        self.errors: dict[str, str] = {}
        self.t_start = time.time()
        self.loadavg_start = loadavg()
        self.flops: dict | None = None
        self.peak: dict | None = None
        self.speed: dict[str, float] = {}  # label -> audio-seconds per second (round trip), latest case
        self.measured: dict[str, dict] = {}  # label -> {Case: median round trip s}
        self.plan_log: list = []
        self.setup_s = 0.0

    # -- set-up ----------------------------------------------------------------------------------
    def start(self) -> None:
        t0 = time.perf_counter()
        cfg = self.cfg
        if not NEMO_FILE.exists():
            raise SystemExit(f"{NEMO_FILE} is missing: build it with `make fixtures FULL=1` (NeMo oracle env)")
        specs = []  # (label, impl, python, weights, opts)
        if "ours" in cfg.impls:
            w = ensure_ours_weights(cfg.ours_py)
            for i, opts in enumerate(cfg.ours):
                specs.append((ours_label(opts, i), "ours", cfg.ours_py, w, opts))
        if "nemo" in cfg.impls:
            if not Path(cfg.oracle_py).exists():
                raise SystemExit(f"{cfg.oracle_py} missing: `make oracle` builds the NeMo environment")
            specs.append(("nemo", "nemo", Path(cfg.oracle_py), NEMO_FILE, {}))
        if "port" in cfg.impls:
            specs.append(("port", "port", ensure_port_env(), ensure_port_weights(), {}))
        for case in cfg.grid:
            ensure_input(case)
        ensure_input(Case(1, 1))  # the short warm-up input
        # loading is not timed: all environments load at once
        log("loading models: " + ", ".join(s[0] for s in specs))
        for label, impl, py, w, opts in specs:
            self.zygotes[label] = Zygote(label, impl, py, w, opts, cfg.threads)
        for label, z in list(self.zygotes.items()):
            try:
                info = z.wait_ready()
                log(f"{label}: {info['package']}, torch {info['torch']}, loaded in {info['load_s']:.1f} s, "
                    f"RSS {info['rss_after_load_mib']:.0f} MiB")
            except WorkerError as e:
                self.errors[label] = str(e)
                log(f"{label}: FAILED to load: {e}")
                z.close()
                del self.zygotes[label]
        if not self.zygotes:
            raise SystemExit("no implementation loaded")
        self.setup_s = time.perf_counter() - t0
        self.t_measure = time.time()

    @property
    def labels(self) -> list[str]:
        return list(self.zygotes)

    @property
    def primary(self) -> str | None:
        return next((label for label in self.zygotes if self.zygotes[label].impl == "ours"), None)

    def close(self) -> None:
        for z in self.zygotes.values():
            z.close()

    # -- planning --------------------------------------------------------------------------------
    def _est_call(self, label: str, case: Case) -> float:
        """A round trip's time, from this implementation's measured cases: the nearest shorter (or
        else the shortest) case of the same batch size, else of batch 1 (linear in audio-seconds); beyond
        the longest measured length, with the growth exponent of the two longest (the cost per
        audio-second rises once activations outgrow the caches), clamped to [1, 1.5]."""
        done = self.measured.get(label, {})
        if not done:
            speed = min(self.speed.values()) if self.speed else 1.0
            return case.audio_seconds / speed + 0.05
        same = [c for c in done if c.batch == case.batch]
        pool = same or [c for c in done if c.batch == 1] or list(done)
        shorter = [c for c in pool if c.audio_seconds <= case.audio_seconds]
        ref = max(shorter, key=lambda c: c.audio_seconds) if shorter else min(pool, key=lambda c: c.audio_seconds)
        p = 1.0  # linear, except beyond the longest measured case of the same batch size
        line = sorted(same, key=lambda c: c.audio_seconds)
        if len(line) >= 2 and line[-1].audio_seconds > line[-2].audio_seconds:
            p = math.log(done[line[-1]] / done[line[-2]]) / math.log(line[-1].audio_seconds / line[-2].audio_seconds)
            p = min(1.5, max(1.0, p))
        ratio = case.audio_seconds / ref.audio_seconds
        return done[ref] * (ratio ** (p if ratio > 1 else 1.0)) + 0.05

    def _est_case(self, case: Case, rounds: int) -> float:
        total = 0.0
        for label in self.labels:
            call = self._est_call(label, case)
            warm = call if call <= self.cfg.warm_full_s else self._est_call(label, Case(1, 1))
            total += warm + rounds * call + 0.5  # + fork, input load, end
        return total

    def remaining_budget(self) -> float:
        if self.cfg.budget_s <= 0:
            return math.inf
        return self.cfg.budget_s - (time.time() - self.t_measure)

    def plan(self, case: Case, remaining_cases: list) -> int:
        """Rounds for `case`: water-fill the remaining budget over the remaining cases, cheapest first."""
        budget = self.remaining_budget()
        cases = [case] + [c for c in remaining_cases if c != case]
        if math.isinf(budget):
            return self.cfg.max_rounds
        if self._est_case(case, 1) > budget:
            return 0
        # cases later in the run order give way first when one round of everything does not fit
        while len(cases) > 1 and sum(self._est_case(c, 1) for c in cases) > budget:
            cases.pop()
        rounds = {c: 1 for c in cases}
        cost = sum(self._est_case(c, 1) for c in cases)
        grew = True
        while grew:
            grew = False
            for c in sorted(cases, key=lambda c: (rounds[c], c.audio_seconds)):
                if rounds[c] >= self.cfg.max_rounds:
                    continue
                extra = self._est_case(c, rounds[c] + 1) - self._est_case(c, rounds[c])
                if cost + extra <= budget:
                    rounds[c] += 1
                    cost += extra
                    grew = True
                    break
        return rounds[case]

    # -- one-off measurements ------------------------------------------------------------------
    def extras(self) -> None:
        """Conv peak (ours' environment) and the model's FLOP count (NeMo, the reference)."""
        counter = "nemo" if "nemo" in self.zygotes else self.primary or self.labels[0]
        z = self.zygotes[counter]
        try:
            z.fork()
            r = z.request({"cmd": "flops", "frames": [2, 4], "spf": SPF}, timeout=600)
            z.end_child()
            if r.get("ok"):
                c2, c4 = r["counts"]
                per_frame = {op: (c4[op] - c2[op]) / 2 for op in ("encode", "decode")}
                intercept = {op: c2[op] - 2 * per_frame[op] for op in ("encode", "decode")}
                self.flops = {"counted_by": counter, "method": "every aten convolution's shapes (torch.utils.flop_counter's "
                              f"formula, 2 FLOP per multiply-add) in the encode and decode of {counter} at 2 and 4 frames",
                              "per_frame": per_frame, "intercept": intercept,
                              "gflop_per_audio_second": {op: per_frame[op] * FPS / 1e9 for op in per_frame}}
                g = self.flops["gflop_per_audio_second"]
                log(f"model cost ({counter}): encode {g['encode']:.2f} + decode {g['decode']:.2f} GFLOP per audio-second")
            else:
                self.errors["flops"] = r.get("error", "?")
        except WorkerError as e:
            self.errors["flops"] = str(e)
        if not self.flops:
            self.flops = {"counted_by": "issue 7", "method": "quoted in issue 7 (not recounted: counting failed)",
                          "per_frame": {op: v * 1e9 / FPS for op, v in ISSUE_GFLOP_PER_S.items()},
                          "intercept": {"encode": 0, "decode": 0}, "gflop_per_audio_second": dict(ISSUE_GFLOP_PER_S)}
        who = self.primary or self.labels[0]
        z = self.zygotes[who]
        try:
            z.fork()
            r = z.request({"cmd": "conv_peak", "layers": PEAK_LAYERS, "reps": self.cfg.peak_reps}, timeout=600)
            z.end_child()
            if r.get("ok"):
                layers = []
                for spec in r["layers"]:
                    med = statistics.median(spec["times"])
                    layers.append({**spec, "median_s": med, "gflops": spec["flop"] / med / 1e9})
                best = max(layers, key=lambda s: s["gflops"])
                self.peak = {"measured_in": who, "threads": z.threads, "layers": layers,
                             "peak_gflops": best["gflops"], "peak_layer": best["name"]}
                log(f"measured peak: {best['gflops']:.0f} GFLOP/s ({best['name']})")
            else:
                self.errors["conv_peak"] = r.get("error", "?")
        except WorkerError as e:
            self.errors["conv_peak"] = str(e)

    def gflop(self, case: Case, op: str) -> float:
        pf = self.flops["per_frame"]
        ops = ("encode", "decode") if op == "roundtrip" else (op,)
        return sum(pf[o] for o in ops) * case.frames * case.batch / 1e9

    # -- a case ----------------------------------------------------------------------------------
    def measure(self, case: Case, remaining: list | None = None) -> dict:
        if case.key in self.results:
            return self.results[case.key]
        remaining = list(remaining if remaining is not None else [c for c in self.cfg.grid if c.key not in self.results])
        rounds = self.plan(case, remaining)
        est = self._est_case(case, max(rounds, 1))
        self.plan_log.append({"case": case.key, "rounds": rounds, "est_s": est, "budget_left_s": self.remaining_budget()})
        res = {"case": case.key, "seconds": case.seconds, "batch": case.batch, "frames": case.frames,
               "audio_seconds_per_item": case.duration, "rounds": rounds, "impl": {}, "order": [],
               "loadavg_before": loadavg(), "started": time.time()}
        self.results[case.key] = res
        if rounds == 0:
            res["skipped"] = f"over the time budget (estimated {est:.0f} s, {self.remaining_budget():.0f} s left)"
            log(f"{case.key}: skipped, {res['skipped']}")
            return res
        log(f"{case.key}: {rounds} round(s), estimated {est:.0f} s, budget left {self.remaining_budget():.0f} s")
        inp = ensure_input(case)
        warm_inp = ensure_input(Case(1, 1))
        outdir = CACHE / "outputs" / case.key
        outdir.mkdir(parents=True, exist_ok=True)
        live = []
        for label, z in self.zygotes.items():
            entry = res["impl"][label] = {"encode": [], "decode": [], "roundtrip": [], "errors": []}
            try:
                entry["child"] = z.fork()
                live.append(label)
            except WorkerError as e:
                entry["errors"].append(str(e))
        req = {"cmd": "rt", "input": str(inp), "batch": case.batch, "samples": case.samples}
        saved = set()

        def call(label: str, timed: bool) -> None:
            z = self.zygotes[label]
            r = dict(req)
            if label not in saved:
                r["save"] = str(outdir / label.replace("/", "_"))
            try:
                reply = z.request(r, timeout=max(600.0, 20 * self._est_call(label, case)))
            except WorkerError as e:
                res["impl"][label]["errors"].append(str(e))
                live.remove(label)
                return
            if not reply.get("ok"):
                res["impl"][label]["errors"].append(reply.get("error", "?") + "\n" + reply.get("traceback", ""))
                live.remove(label)
                z.abandon_child()
                return
            if label not in saved:
                saved.add(label)
                res["impl"][label]["outputs"] = {k: reply[k] for k in ("tokens_shape", "audio_shape", "tokens_sha1")}
                res["impl"][label]["frames_out"] = reply["frames"]
            if timed:
                for op in OPS:
                    res["impl"][label][op].append(reply[op])
            else:
                res["impl"][label].setdefault("warmup", []).append(reply["roundtrip"])

        # warm-up: the case itself when it is cheap, else a 1 s batch-1 call (threads, lazy init)
        for label in list(live):
            if self._est_call(label, case) <= self.cfg.warm_full_s:
                call(label, timed=False)
            else:
                z = self.zygotes[label]
                try:
                    reply = z.request({"cmd": "rt", "input": str(warm_inp), "batch": 1, "samples": Case(1, 1).samples}, timeout=600)
                    res["impl"][label]["warmup_short"] = reply.get("roundtrip")
                except WorkerError as e:
                    res["impl"][label]["errors"].append(str(e))
                    live.remove(label)
        t_rounds = time.time()
        for r_i in range(rounds):
            if r_i >= 1 and self.cfg.budget_s > 0:
                per_round = (time.time() - t_rounds) / r_i
                if per_round > self.remaining_budget():
                    res["stopped_early"] = f"after {r_i} of {rounds} rounds: the next would overrun the budget"
                    log(f"{case.key}: {res['stopped_early']}")
                    break
            order = [self.labels[(r_i + k) % len(self.labels)] for k in range(len(self.labels))]
            order = [label for label in order if label in live]
            res["order"].append(order)
            for label in order:
                call(label, timed=True)
        for label in self.labels:
            entry = res["impl"][label]
            z = self.zygotes[label]
            if z.in_child:
                try:
                    entry["memory"] = z.end_child()
                except WorkerError as e:
                    entry["errors"].append(str(e))
            times = entry["roundtrip"]
            if times:
                self.speed[label] = case.audio_seconds / statistics.median(times)
                self.measured.setdefault(label, {})[case] = statistics.median(times)
        res["rounds_done"] = len(res["order"])
        res["elapsed_s"] = time.time() - res["started"]
        res["loadavg_after"] = loadavg()
        res["agreement"] = agreement(outdir, [label for label in self.labels if label in saved])
        summary = ", ".join(
            f"{label} {statistics.median(res['impl'][label]['roundtrip']) * 1000:.0f} ms"
            for label in self.labels if res["impl"][label]["roundtrip"]
        )
        log(f"{case.key}: round trip medians: {summary} ({res['elapsed_s']:.0f} s)")
        return res

    def run_all(self) -> None:
        for case in run_order(self.cfg.grid):
            self.measure(case)

    # -- results -----------------------------------------------------------------------------------
    def summary(self) -> dict:
        from report import summarize  # benchmarks/report.py

        return summarize(self)


def agreement(outdir: Path, labels: list) -> dict:
    """Tokens identical (fraction of token values) and decoded-audio SNR, each implementation vs NeMo
    (vs the first implementation when NeMo is absent): a check that all run the same weights."""
    import numpy as np

    ref = "nemo" if "nemo" in labels else (labels[0] if labels else None)
    if ref is None:
        return {}
    meta = {}
    for label in labels:
        p = outdir / label.replace("/", "_")
        meta[label] = (np.fromfile(str(p) + ".tokens.i32", dtype=np.int32), np.fromfile(str(p) + ".audio.f32", dtype=np.float32))
    rt, ra = meta[ref]
    out = {"reference": ref}
    for label in labels:
        if label == ref:
            continue
        t, a = meta[label]
        entry = {}
        if t.shape == rt.shape:
            entry["tokens_equal"] = float((t == rt).mean())
        else:
            entry["tokens_equal"] = None
            entry["note"] = f"token count differs: {t.size} vs {rt.size}"
        n = min(a.size, ra.size)
        if n:
            err = a[:n].astype(np.float64) - ra[:n]
            sig = float((ra[:n].astype(np.float64) ** 2).sum())
            noise = float((err ** 2).sum())
            entry["snr_db"] = (10 * math.log10(sig / noise)) if noise > 0 else math.inf
            entry["max_abs_diff"] = float(np.abs(err).max())
        out[label] = entry
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ours", action="append", help="our model's options, e.g. dtype=bfloat16,threads=1 (repeat for variants)")
    ap.add_argument("--impls", help="comma list of ours,nemo,port")
    ap.add_argument("--threads", default="auto", help="threads per implementation, or auto (default)")
    ap.add_argument("--budget-s", type=float)
    ap.add_argument("--max-rounds", type=int)
    ap.add_argument("--grid", help="e.g. 1x1,5x1,1x4 (seconds x batch)")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    cfg = Config.from_args(a.quick, a.ours, a.impls, a.threads, a.budget_s, a.max_rounds, a.out, a.grid)
    bench = Bench(cfg)
    try:
        bench.start()
        bench.extras()
        bench.run_all()
    finally:
        bench.close()
    from report import write_reports

    paths = write_reports(bench)
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
