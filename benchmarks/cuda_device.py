"""Issue 7's CUDA half and CUDA parity, in one prepared command for a short GPU lease.

    PYTHONUNBUFFERED=1 python3 benchmarks/cuda_device.py --out $OUT [--budget-s 330] [--device cuda] [--tiny]
    (python3 -m benchmarks.cuda_device ... is the same)

What it does, in order, writing every report again after each step (a timeout still leaves the
figures measured so far in $OUT):

1. builds the seeded full-size NanoCodec (the weights of `make fixtures FULL=1`, see
   benchmarks/device_setup.py) in NeMo's own modules (benchmarks/nemo_from_wheel.py) and in ours;
2. parity, float32 with TF32 off (contracts §5, CUDA: the token rule, latents <= 1e-4 relative,
   audio <= 1e-4): ours vs NeMo on the device for 1 s, 5 s and a ragged batch (both batch modes),
   plus ours-device vs ours-CPU and NeMo-device vs NeMo-CPU for context;
3. half precision (reported, not gated): ours in bf16 and fp16 (`from_pretrained(dtype=)`), NeMo
   under bf16 autocast and cast to bf16, TF32 for both: token match vs float32 NeMo, decode SNR;
4. benchmark, ours vs NeMo interleaved: encode / decode / round trip, batch 1 at 1-60 s and batch
   4 / 16 at 1 and 5 s; device events, warm-up, medians, peak memory per case (the seed's memory
   table: batch 1/4/16 x 5 s float32); then a throughput sweep (batch up to 64 x 5 s) per
   precision, our encode/decode as CUDA graphs, cudnn.benchmark on vs off and torch.compile, each
   as far as the budget allows (STEP_END);
5. issue 7's CUDA targets, each met or missed with its figure.

Outputs: $OUT/parity-cuda-<card>.md, $OUT/bench-cuda-<card>.md, $OUT/bench-cuda-<card>.json
(benchmarks/cuda_device_report.py writes them). `--device cpu --tiny` runs the same code paths
(less the CUDA-only ones) on the committed reduced-width fixture model in well under 2 minutes:
that is how tests/test_cuda_device_script.py checks this script without a GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# the repository's packages first; this folder's modules as top-level names, as benchmarks/conftest.py
# imports harness (`benchmarks` has no __init__.py: a namespace package, which any regular package of
# that name on the device's Python path would shadow)
for _p in (str(HERE), str(REPO)):
    if _p in sys.path:
        sys.path.remove(_p)
    sys.path.insert(0, _p)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import cuda_device_report as report  # noqa: E402
from device_setup import build_models, machine_info, speech  # noqa: E402
from harness import ISSUE_GFLOP_PER_S, Case  # noqa: E402
from parity import compare  # noqa: E402

SR = 22050
SPF = 1764
CUDA_AUDIO_MAX_ABS_TOL = 1e-4  # contracts §5, CUDA float32 with TF32 off
TARGETS = {"throughput_vs_nemo_best": 2.0, "throughput_rt": 1000.0, "latency_1x5s_ms": 25.0, "peak_16x5s_gb": 1.0}


# ----------------------------------------------------------------------------------------------
# profiles: the full-size run for the GPU, and the tiny one that tests the script on a CPU
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    name: str
    model: str  # parity/oracle/build_fixtures.py model name
    parity_seconds: tuple  # single items
    ragged_seconds: tuple  # one ragged batch
    half_seconds: tuple
    grid: tuple  # benchmark cases, in run order (the headline and the memory table first)
    sweep_seconds: float
    sweep_batches: tuple
    memory_cases: tuple  # the seed's memory table
    case_target_s: float  # timed seconds per case and implementation
    max_reps: int
    flops: bool  # issue 7's GFLOP per audio-second applies (full-size model only)


FULL = Profile(
    name="full", model="nano0p6_full", parity_seconds=(1.0, 5.0), ragged_seconds=(5.0, 2.3, 1.0 + 7 / SR, 0.37),
    half_seconds=(1.0, 5.0, 10.0),
    grid=(Case(5, 1), Case(5, 16), Case(5, 4), Case(1, 1), Case(1, 4), Case(1, 16), Case(10, 1), Case(30, 1), Case(60, 1)),
    sweep_seconds=5.0, sweep_batches=(1, 4, 16, 32, 64), memory_cases=(Case(5, 1), Case(5, 4), Case(5, 16)),
    case_target_s=1.0, max_reps=15, flops=True,
)
TINY = Profile(
    name="tiny", model="nano0p6_replicate", parity_seconds=(0.3, 1.0), ragged_seconds=(1.0, 0.5, 0.2 + 7 / SR),
    half_seconds=(1.0,), grid=(Case(1, 1), Case(1, 4), Case(0.5, 1)), sweep_seconds=0.5, sweep_batches=(1, 4),
    memory_cases=(Case(1, 1), Case(1, 4)), case_target_s=0.15, max_reps=3, flops=False,
)

# which fraction of the budget may be spent when a step starts its last case (later steps get the
# rest). Steps run in this order: the targets' figures first; graph capture after the sweep, since a
# capture that fails inside the library could leave the CUDA context unusable for what follows
STEP_END = {"grid": 0.45, "sweep": 0.72, "graphs": 0.80, "cudnn_benchmark": 0.87, "compile": 0.97}


# ----------------------------------------------------------------------------------------------
# small tools
# ----------------------------------------------------------------------------------------------
class Clock:
    def __init__(self, budget_s: float):
        self.t0, self.budget = time.monotonic(), budget_s

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self, step: str | None = None) -> float:
        end = self.budget * (STEP_END[step] if step else 1.0)
        return end - self.elapsed()


CLOCK = Clock(0)


def log(msg: str) -> None:
    print(f"[cuda_device {time.strftime('%H:%M:%S')} +{CLOCK.elapsed():6.1f}s] {msg}", flush=True)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Device events on CUDA (the work is asynchronous), perf_counter on CPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.device = device

    def mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def ms(self, a, b) -> float:
        return a.elapsed_time(b) if self.cuda else (b - a) * 1000.0


@contextlib.contextmanager
def tf32(enabled: bool):
    m, c = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = m, c


@contextlib.contextmanager
def cudnn_benchmark(enabled: bool):
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


def np32(x) -> np.ndarray:
    return x.detach().float().cpu().numpy()


def wave(x) -> np.ndarray:
    """Decoded audio as [B, T] float32: ours returns [B,1,T], NeMo [B,T]."""
    x = np32(x)
    return x.reshape(x.shape[0], -1)


def free(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def err_text(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


# ----------------------------------------------------------------------------------------------
# the implementations, behind one interface
# ----------------------------------------------------------------------------------------------
@dataclass
class Impl:
    """One side in one precision: encode(audio [B,T] f32, lens) -> (tokens, lens), decode -> audio."""
    label: str
    side: str  # ours | nemo
    precision: str  # fp32 | tf32 | bf16 | fp16 | fp32-chunk1s | bf16-autocast | bf16-cast
    model: object
    weights_bytes: int
    autocast: torch.dtype | None = None
    tf32: bool = False
    input_dtype: torch.dtype = torch.float32
    chunk_seconds: float | str | None = "auto"  # ours: encode/decode in chunks of this many seconds

    def _ctx(self, device):
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(tf32(self.tf32))
        if self.autocast is not None:
            stack.enter_context(torch.autocast(device.type, dtype=self.autocast))
        return stack

    def encode(self, audio, lens):
        with self._ctx(audio.device):
            if self.side == "ours":
                return self.model.encode(audio, lens, chunk_seconds=self.chunk_seconds)
            return self.model.encode(audio=audio.to(self.input_dtype), audio_len=lens)

    def decode(self, tokens, tokens_len):
        with self._ctx(tokens.device):
            if self.side == "ours":
                return self.model.decode(tokens, tokens_len, chunk_seconds=self.chunk_seconds)[0]
            return self.model.decode(tokens=tokens, tokens_len=tokens_len)[0]

    def latents(self, audio, lens, nemo_batch_compat=False):
        with self._ctx(audio.device):
            if self.side == "ours":
                return self.model.encode_latents(audio, lens, nemo_batch_compat=nemo_batch_compat)[0]
            return self.model.encode_audio(audio=audio.to(self.input_dtype), audio_len=lens)[0]


def weights_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def make_impl(models, side: str, precision: str, device) -> Impl:
    f32, bf16, f16 = torch.float32, torch.bfloat16, torch.float16
    if side == "ours":
        # "fp32-chunk1s": exact chunked processing (1 s chunks), the lever for peak memory at batch 16
        dtype = {"fp32": f32, "tf32": f32, "bf16": bf16, "fp16": f16, "fp32-chunk1s": f32}[precision]
        m = models.ours(device, dtype)
        return Impl(f"ours {precision}", "ours", precision, m, weights_bytes(m), tf32=precision == "tf32",
                    chunk_seconds=1.0 if precision == "fp32-chunk1s" else "auto")
    dtype = bf16 if precision == "bf16-cast" else f32
    m = models.nemo(device, dtype)
    return Impl(f"NeMo {precision}", "nemo", precision, m, weights_bytes(m), tf32=precision == "tf32",
                autocast=bf16 if precision == "bf16-autocast" else None, input_dtype=dtype)


# ----------------------------------------------------------------------------------------------
# 2. parity
# ----------------------------------------------------------------------------------------------
def batch_of(items: list[np.ndarray], device, junk: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded [B,T] (or junk past each length, as the parity fixtures do), int64 lengths."""
    n = max(len(x) for x in items)
    g = np.random.default_rng(777)
    out = (g.uniform(-0.5, 0.5, (len(items), n)) if junk else np.zeros((len(items), n))).astype(np.float32)
    for i, x in enumerate(items):
        out[i, :len(x)] = x
    return torch.from_numpy(out).to(device), torch.tensor([len(x) for x in items], device=device)


def run_side(impl: Impl, audio, lens, ref_tokens=None, ref_len=None, compat=False) -> dict:
    """latents, tokens and the decode of `ref_tokens` (same tokens for both sides: contracts §5)."""
    lat = impl.latents(audio, lens, nemo_batch_compat=compat)
    if impl.side == "ours":
        with impl._ctx(audio.device):
            tokens, tlen = impl.model.encode(audio, lens, nemo_batch_compat=compat)
    else:
        tokens, tlen = impl.encode(audio, lens)
    out = {"latents": lat, "tokens": tokens, "tokens_len": tlen}
    if ref_tokens is not None:
        out["audio"] = impl.decode(ref_tokens.to(audio.device), ref_len.to(audio.device))
    return out


def prerounding(models, latents) -> np.ndarray:
    """NeMo's FSQ pre-rounding values of the reference latents, [B, G*D, F] float32: our quantizer
    computes NeMo's float32 expression op for op (the boundary rule of contracts §5 reads it)."""
    q = models.ours(torch.device("cpu")).quantizer
    pre = q.prerounding(latents.detach().float().cpu())
    return pre.reshape(pre.shape[0], -1, pre.shape[-1]).numpy()


def compare_sides(models, name: str, kind: str, ours: dict, ref: dict, gate: bool) -> dict:
    tok = compare.compare_tokens(np32(ours["tokens"]).astype(np.int64), np32(ref["tokens"]).astype(np.int64),
                                 prerounding(models, ref["latents"]), np32(ref["tokens_len"]).astype(np.int64))
    lat = compare.latent_rel_error(np32(ours["latents"]), np32(ref["latents"]))
    a, r = wave(ours["audio"]), wave(ref["audio"])
    err, snr = compare.max_abs_error(a, r), compare.snr_db(a, r)
    ok = tok.ok and lat <= compare.LATENT_REL_TOL and err <= CUDA_AUDIO_MAX_ABS_TOL
    return {"input": name, "kind": kind, "gate": gate, "ok": bool(ok), "tokens": tok.to_dict(),
            "latent_rel_error": lat, "audio_max_abs_error": err, "audio_snr_db": snr,
            "frames": int(np32(ref["tokens_len"]).sum())}


def nemo_per_item(impl: Impl, audio, lens) -> dict:
    """NeMo on each item alone (what ours' default, batch-invariant mode promises), padded to a batch."""
    outs = [run_side(impl, audio[i:i + 1, :int(lens[i])], lens[i:i + 1]) for i in range(audio.shape[0])]
    f = max(o["tokens"].shape[-1] for o in outs)

    def stack(key):
        return torch.cat([torch.nn.functional.pad(o[key], (0, f - o[key].shape[-1])) for o in outs])

    return {"latents": stack("latents"), "tokens": stack("tokens"), "tokens_len": torch.cat([o["tokens_len"] for o in outs])}


def parity_inputs(profile: Profile) -> list:
    out = [(f"speech_{s:g}s", [speech(int(round(s * SR)), offset_s=3.1 * i)]) for i, s in enumerate(profile.parity_seconds)]
    ragged = [speech(int(round(s * SR)), offset_s=1.7 * i + 0.4, gain=0.9 - 0.1 * i) for i, s in enumerate(profile.ragged_seconds)]
    out.append(("ragged_" + "_".join(str(len(x)) for x in ragged), ragged))
    return out


def step_parity(models, profile: Profile, device, res: dict) -> None:
    cpu = torch.device("cpu")
    ours_d, nemo_d = make_impl(models, "ours", "fp32", device), make_impl(models, "nemo", "fp32", device)
    ours_c, nemo_c = make_impl(models, "ours", "fp32", cpu), make_impl(models, "nemo", "fp32", cpu)
    dev = device.type
    rows = res["parity"]["rows"]
    for name, items in parity_inputs(profile):
        t0 = time.monotonic()
        ragged = len(items) > 1
        audio, lens = batch_of(items, device, junk=ragged)
        audio_c, lens_c = audio.cpu(), lens.cpu()
        if not ragged:
            nd = run_side(nemo_d, audio, lens)
            nd["audio"] = nemo_d.decode(nd["tokens"], nd["tokens_len"])
            od = run_side(ours_d, audio, lens, nd["tokens"], nd["tokens_len"])
            rows.append(compare_sides(models, name, f"ours-{dev} vs NeMo-{dev}", od, nd, gate=True))
            # context: each side against itself on the CPU (CPU decodes the device's tokens)
            oc = run_side(ours_c, audio_c, lens_c, od["tokens"], od["tokens_len"])
            od["audio"] = ours_d.decode(od["tokens"], od["tokens_len"])
            rows.append(compare_sides(models, name, f"ours-{dev} vs ours-cpu", od, oc, gate=False))
            nc = run_side(nemo_c, audio_c, lens_c, nd["tokens"], nd["tokens_len"])
            rows.append(compare_sides(models, name, f"NeMo-{dev} vs NeMo-cpu", nd, nc, gate=False))
        else:
            # default mode: item i gets NeMo's encode of that item alone, junk past its length ignored
            ref = nemo_per_item(nemo_d, audio, lens)
            ref["audio"] = nemo_d.decode(ref["tokens"], ref["tokens_len"])
            od = run_side(ours_d, audio, lens, ref["tokens"], ref["tokens_len"])
            rows.append(compare_sides(models, name, f"ours-{dev} vs NeMo-{dev} per item (batch-invariant)", od, ref, gate=True))
            # nemo_batch_compat: NeMo's own batched call on the same tensor, junk included
            nb = run_side(nemo_d, audio, lens)
            nb["audio"] = nemo_d.decode(nb["tokens"], nb["tokens_len"])
            ob = run_side(ours_d, audio, lens, nb["tokens"], nb["tokens_len"], compat=True)
            rows.append(compare_sides(models, name, f"ours-{dev} vs NeMo-{dev} batched (nemo_batch_compat)", ob, nb, gate=True))
        log(f"parity {name}: " + "; ".join(f"{r['kind']}: {'PASS' if r['ok'] else 'FAIL'} tokens "
                                           f"{r['tokens']['matched']}/{r['tokens']['tokens']} audio {r['audio_max_abs_error']:.1e}"
                                           for r in rows if r["input"] == name) + f" ({time.monotonic() - t0:.1f} s)")
    gated = [r for r in rows if r["gate"]]
    res["parity"]["pass"] = bool(gated) and all(r["ok"] for r in gated)


# ----------------------------------------------------------------------------------------------
# 3. half precision (reported, not gated)
# ----------------------------------------------------------------------------------------------
HALF_VARIANTS = [("ours", "bf16"), ("ours", "fp16"), ("ours", "tf32"), ("nemo", "bf16-autocast"), ("nemo", "bf16-cast"),
                 ("nemo", "tf32")]


def step_half(models, profile: Profile, device, res: dict) -> None:
    ref_impl = make_impl(models, "nemo", "fp32", device)
    refs = []
    for i, s in enumerate(profile.half_seconds):
        audio, lens = batch_of([speech(int(round(s * SR)), offset_s=5.3 * i)], device, junk=False)
        r = run_side(ref_impl, audio, lens)
        r["audio"] = ref_impl.decode(r["tokens"], r["tokens_len"])
        refs.append((f"speech_{s:g}s", audio, lens, r))
    for side, precision in HALF_VARIANTS:
        try:
            impl = make_impl(models, side, precision, device)
        except Exception as e:  # noqa: BLE001  a precision the device cannot run is a finding, not a crash
            res["half"]["rows"].append({"impl": f"{side} {precision}", "error": err_text(e)})
            continue
        for name, audio, lens, ref in refs:
            try:
                tokens, tlen = impl.encode(audio, lens)
                lat = impl.latents(audio, lens)
                dec = impl.decode(ref["tokens"], ref["tokens_len"])
                t, rt = np32(tokens), np32(ref["tokens"])
                row = {"impl": impl.label, "input": name, "token_match": float((t == rt).mean()),
                       "latent_rel_error": compare.latent_rel_error(np32(lat), np32(ref["latents"])),
                       "decode_snr_db": compare.snr_db(wave(dec), wave(ref["audio"])),
                       "decode_max_abs_error": compare.max_abs_error(wave(dec), wave(ref["audio"]))}
            except Exception as e:  # noqa: BLE001
                row = {"impl": impl.label, "input": name, "error": err_text(e)}
            res["half"]["rows"].append(row)
        done = [r for r in res["half"]["rows"] if r["impl"] == impl.label and "token_match" in r]
        log(f"half {impl.label}: " + ", ".join(f"{r['input']} tokens {100 * r['token_match']:.1f}% SNR {r['decode_snr_db']:.1f} dB"
                                               for r in done))


# ----------------------------------------------------------------------------------------------
# 4. benchmark
# ----------------------------------------------------------------------------------------------
def case_input(case: Case, device) -> tuple[torch.Tensor, torch.Tensor]:
    items = [speech(case.samples, offset_s=0.77 * i, gain=0.9 - 0.03 * (i % 7)) for i in range(case.batch)]
    return batch_of(items, device, junk=False)


def run_once(impl: Impl, audio, lens, timer: Timer) -> tuple[float, float, float]:
    sync(timer.device)
    m0 = timer.mark()
    tokens, tlen = impl.encode(audio, lens)
    m1 = timer.mark()
    out = impl.decode(tokens, tlen)
    m2 = timer.mark()
    sync(timer.device)
    del tokens, tlen, out
    return timer.ms(m0, m1), timer.ms(m1, m2), timer.ms(m0, m2)


def peak_bytes(impl: Impl, audio, lens, timer: Timer) -> tuple[int | None, float]:
    """Device memory a round trip needs above what was allocated before (both models' weights are
    resident in this process, so the absolute high-water mark would count the other's too)."""
    dev = timer.device
    if dev.type != "cuda":
        return None, run_once(impl, audio, lens, timer)[2]
    free(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    rt = run_once(impl, audio, lens, timer)[2]
    return torch.cuda.max_memory_allocated(dev) - base, rt


def summarize(samples: list) -> dict:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


class Predictor:
    """ms per audio-second per implementation, batch 1 and batched apart (batching changes the rate
    several-fold), from the latest case of that kind: a case starts only if its predicted cost fits
    what is left of its step's budget."""

    def __init__(self):
        self.rate: dict[tuple, float] = {}

    def learn(self, label: str, batch: int, ms: float, audio_s: float) -> None:
        self.rate[(label, batch > 1)] = ms / audio_s

    def cost_s(self, labels, batch: int, audio_s: float, calls: int) -> float:
        per = []
        for lb in labels:
            r = self.rate.get((lb, batch > 1), self.rate.get((lb, batch == 1)))
            if r is not None:
                per.append(r)
        rate = sum(per) / len(per) if per else 50.0  # nothing known yet: assume 20x real time
        return calls * len(labels) * rate * audio_s / 1000.0


PREDICT = Predictor()


def bench_case(case: Case, impls: list, device, profile: Profile, step: str, extra_warmup: int = 0) -> dict:
    """Peak memory (first call, also the first warm-up), one more warm-up, then interleaved rounds in
    rotating order; medians of device-event times."""
    timer = Timer(device)
    labels = [i.label for i in impls]
    if PREDICT.cost_s(labels, case.batch, case.audio_seconds, 4 + extra_warmup) > CLOCK.left(step):
        return {"case": case.key, "skipped": f"budget: {CLOCK.left(step):.0f} s left for {step}"}
    audio, lens = case_input(case, device)
    out = {"case": case.key, "seconds": case.duration, "batch": case.batch, "audio_seconds": case.audio_seconds, "impls": {}}
    live, warm_ms = [], {}
    for impl in impls:
        try:
            peak, first = peak_bytes(impl, audio, lens, timer)
            for _ in range(1 + extra_warmup):
                warm_ms[impl.label] = run_once(impl, audio, lens, timer)[2]
            PREDICT.learn(impl.label, case.batch, warm_ms[impl.label], case.audio_seconds)
            out["impls"][impl.label] = {"peak_bytes": peak, "weights_bytes": impl.weights_bytes, "first_call_ms": first,
                                        "encode": [], "decode": [], "roundtrip": []}
            live.append(impl)
        except Exception as e:  # noqa: BLE001  OOM or a failing precision: recorded, the others go on
            out["impls"][impl.label] = {"error": err_text(e)}
            free(device)
    if not live:
        return out
    est_s = max(sum(warm_ms[i.label] for i in live) / 1000.0, 1e-4)  # one round of all implementations
    reps = int(min(profile.max_reps, max(3, profile.case_target_s * len(live) / est_s)))
    reps = max(2, min(reps, int(CLOCK.left(step) / est_s)))
    for r in range(reps):
        for k in range(len(live)):
            impl = live[(k + r) % len(live)]
            e, d, t = run_once(impl, audio, lens, timer)
            rec = out["impls"][impl.label]
            rec["encode"].append(e)
            rec["decode"].append(d)
            rec["roundtrip"].append(t)
    for impl in live:
        rec = out["impls"][impl.label]
        for op in ("encode", "decode", "roundtrip"):
            rec[op] = summarize(rec[op])
        rec["x_real_time"] = case.audio_seconds / (rec["roundtrip"]["median"] / 1000.0)
        if profile.flops:
            gflop = sum(ISSUE_GFLOP_PER_S.values()) * case.audio_seconds
            rec["tflops"] = gflop / rec["roundtrip"]["median"]  # GFLOP / ms = TFLOP/s
    free(device)
    return out


def case_line(c: dict) -> str:
    if "skipped" in c:
        return f"{c['case']}: skipped ({c['skipped']})"
    parts = []
    for label, r in c["impls"].items():
        if "error" in r:
            parts.append(f"{label} ERROR {r['error']}")
        else:
            mem = f", {r['peak_bytes'] / 2**20:.0f} MiB" if r["peak_bytes"] is not None else ""
            parts.append(f"{label} {r['roundtrip']['median']:.1f} ms ({r['x_real_time']:.0f}x RT{mem})")
    return f"{c['case']}: " + "; ".join(parts)


GRID_IMPLS = [("ours", "fp32"), ("nemo", "fp32"), ("ours", "bf16"), ("nemo", "bf16-autocast"), ("ours", "fp32-chunk1s")]
SWEEP_IMPLS = [("ours", "bf16"), ("nemo", "bf16-autocast"), ("ours", "fp32"), ("nemo", "fp32"), ("ours", "fp16"),
               ("nemo", "bf16-cast"), ("ours", "tf32"), ("nemo", "tf32")]


def impls_for(models, pairs, device) -> list:
    out = []
    for side, precision in pairs:
        try:
            out.append(make_impl(models, side, precision, device))
        except Exception as e:  # noqa: BLE001
            log(f"{side} {precision}: cannot be built: {err_text(e)}")
    return out


def step_grid(models, profile, device, res, write) -> None:
    impls = impls_for(models, GRID_IMPLS, device)
    res["grid"]["impls"] = [i.label for i in impls]
    for case in profile.grid:
        c = bench_case(case, impls, device, profile, "grid")
        res["grid"]["cases"].append(c)
        log("grid " + case_line(c))
        write()


def step_sweep(models, profile, device, res, write) -> None:
    """Round trip at growing batch per precision: each side's best throughput. The precisions run in
    pairs (ours, NeMo), most telling first, so a budget cut falls on the least telling."""
    for k in range(0, len(SWEEP_IMPLS), 2):
        impls = impls_for(models, SWEEP_IMPLS[k:k + 2], device)
        for b in profile.sweep_batches:
            c = bench_case(Case(profile.sweep_seconds, b), impls, device, profile, "sweep")
            c["impl_group"] = [i.label for i in impls]
            res["sweep"]["seconds"] = profile.sweep_seconds
            res["sweep"]["cases"].append(c)
            log("sweep " + case_line(c))
            write()
            if "skipped" in c:
                break


def step_cudnn_benchmark(models, profile, device, res, write) -> None:
    """The same cases with cudnn.benchmark on (autotuned algorithms; an extra warm-up call pays the
    tuning), against the off figures measured in this step too."""
    impls = impls_for(models, [("ours", "fp32"), ("nemo", "fp32"), ("ours", "bf16"), ("nemo", "bf16-autocast")], device)
    for case in (profile.memory_cases[0], profile.memory_cases[-1]):
        for on in (False, True):
            with cudnn_benchmark(on):
                c = bench_case(case, impls, device, profile, "cudnn_benchmark", extra_warmup=1 if on else 0)
            c["cudnn_benchmark"] = on
            res["cudnn_benchmark"]["cases"].append(c)
            log(f"cudnn.benchmark={on} " + case_line(c))
            write()


def _graph_times(fn, reps: int, device) -> list:
    timer = Timer(device)
    out = []
    for _ in range(reps):
        sync(device)
        a = timer.mark()
        fn()
        b = timer.mark()
        sync(device)
        out.append(timer.ms(a, b))
    return out


def graph_case(model, case: Case, device, reps: int) -> dict:
    """Our encode and decode captured as CUDA graphs at a fixed shape (whole frames, full lengths:
    the validation and length logic of encode()/decode() is host-side and stays outside), compared
    with the eager calls for equality and time."""
    audio, lens = case_input(case, device)
    spf = model.samples_per_frame
    with torch.inference_mode():
        tokens, tlen = model.encode(audio, lens)
        eager_audio = model.decode(tokens, tlen).audio
        x = audio.to(model.dtype).unsqueeze(1)
        out_len = tlen * spf

        def enc():
            return model.quantizer.encode(model.encoder(x), tlen)

        def dec():
            return model.decoder(model.quantizer.decode(tokens, tlen).to(model.dtype), out_len)

        result = {"case": case.key, "dtype": str(model.dtype).replace("torch.", "")}
        for name, body, eager in (("encode", enc, lambda: model.encode(audio, lens)),
                                  ("decode", dec, lambda: model.decode(tokens, tlen))):
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up off the capture stream, as torch.cuda.graphs requires
                    body()
            torch.cuda.current_stream(device).wait_stream(side)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                static_out = body()
            g.replay()
            sync(device)
            if name == "encode":
                same = float((static_out == tokens).float().mean())
                check = {"token_match_vs_eager": same}
            else:
                check = {"max_abs_error_vs_eager": compare.max_abs_error(wave(static_out), wave(eager_audio))}
            graph_ms = _graph_times(g.replay, reps, device)
            eager_ms = _graph_times(eager, reps, device)
            result[name] = {**check, "graph_ms": summarize(graph_ms), "eager_ms": summarize(eager_ms),
                            "speedup": statistics.median(eager_ms) / statistics.median(graph_ms)}
            del g, static_out
    return result


def step_graphs(models, profile, device, res, write) -> None:
    if device.type != "cuda":
        res["graphs"]["skipped"] = "CUDA graphs need a CUDA device"
        return
    for dtype in (torch.float32, torch.bfloat16):
        for case in (profile.memory_cases[0], profile.memory_cases[-1]):
            if CLOCK.left("graphs") < 15:
                res["graphs"]["cases"].append({"case": case.key, "skipped": "budget"})
                continue
            try:
                r = graph_case(models.ours(device, dtype), case, device, reps=10 if case.batch == 1 else 4)
                log(f"graphs {case.key} {r['dtype']}: encode {r['encode']['graph_ms']['median']:.2f} ms "
                    f"(eager {r['encode']['eager_ms']['median']:.2f}), decode {r['decode']['graph_ms']['median']:.2f} ms "
                    f"(eager {r['decode']['eager_ms']['median']:.2f})")
            except Exception as e:  # noqa: BLE001  a capture failure is a finding for the library
                r = {"case": case.key, "dtype": str(dtype), "error": err_text(e), "traceback": traceback.format_exc()[-2500:]}
                log(f"graphs {case.key}: {err_text(e)}")
            res["graphs"]["cases"].append(r)
            free(device)
            write()


def compile_case(model, case: Case, device, mode: str, reps: int) -> dict:
    """torch.compile of our encoder and decoder modules (the parts that compute), at one fixed shape."""
    import torch._dynamo

    torch._dynamo.reset()
    audio, lens = case_input(case, device)
    out = {"case": case.key, "mode": mode, "dtype": str(model.dtype).replace("torch.", "")}
    enc_eager, dec_eager = model.encoder, model.decoder
    with torch.inference_mode():
        tokens, tlen = model.encode(audio, lens)
        ref_audio = model.decode(tokens, tlen).audio
        try:
            model.encoder = torch.compile(enc_eager, mode=mode)
            model.decoder = torch.compile(dec_eager, mode=mode)
            t0 = time.monotonic()
            ctok, _ = model.encode(audio, lens)
            caudio = model.decode(tokens, tlen).audio
            sync(device)
            out["compile_and_first_call_s"] = time.monotonic() - t0
            out["token_match_vs_eager"] = float((ctok == tokens).float().mean())
            out["audio_max_abs_error_vs_eager"] = compare.max_abs_error(wave(caudio), wave(ref_audio))
            for _ in range(2):
                model.decode(model.encode(audio, lens)[0], tlen)
            impl = Impl(f"ours compiled ({mode})", "ours", str(model.dtype), model, 0)
            timer = Timer(device)
            times = [run_once(impl, audio, lens, timer) for _ in range(reps)]
            out.update({op: summarize([t[k] for t in times]) for k, op in enumerate(("encode", "decode", "roundtrip"))})
        finally:
            model.encoder, model.decoder = enc_eager, dec_eager
    return out


def step_compile(models, profile, device, res, write, enabled: bool) -> None:
    if not enabled:
        res["compile"]["skipped"] = "off (--compile off, or auto on a CPU)"
        return
    modes = ["default"] + (["reduce-overhead"] if device.type == "cuda" else [])
    need = 25.0 if profile.name == "tiny" else 100.0  # a compile of the full-size model takes about a minute
    for mode in modes:
        case = profile.memory_cases[0]
        if CLOCK.left("compile") < need:
            res["compile"]["cases"].append({"case": case.key, "mode": mode, "skipped": f"budget: {CLOCK.left('compile'):.0f} s left"})
            log(f"compile {mode}: skipped (budget)")
            continue
        # on record before it starts: a compile the time limit kills still shows in the reports
        res["compile"]["cases"].append({"case": case.key, "mode": mode, "skipped": f"started at +{CLOCK.elapsed():.0f} s, "
                                        "did not finish before the run ended"})
        write()
        try:
            r = compile_case(models.ours(device, torch.float32), case, device, mode, reps=5 if profile.name == "full" else 2)
            log(f"compile {mode} {case.key}: first call {r['compile_and_first_call_s']:.1f} s, round trip "
                f"{r['roundtrip']['median']:.2f} ms, tokens {100 * r['token_match_vs_eager']:.1f}% of eager")
        except Exception as e:  # noqa: BLE001
            r = {"case": case.key, "mode": mode, "error": err_text(e), "traceback": traceback.format_exc()[-2500:]}
            log(f"compile {mode}: {err_text(e)}")
        res["compile"]["cases"][-1] = r
        free(device)
        write()


# ----------------------------------------------------------------------------------------------
# 5. targets
# ----------------------------------------------------------------------------------------------
def grid_record(res: dict, case_key: str, label: str) -> dict | None:
    for c in res["grid"]["cases"]:
        r = c.get("impls", {}).get(label)
        if c["case"] == case_key and r and "error" not in r:
            return r
    return None


def latency_ms(res, case_key, label):
    r = grid_record(res, case_key, label)
    return None if r is None else r["roundtrip"]["median"]


def peak_incl_weights(res, case_key, label):
    """The figure the seed's memory table means: what the process needs, its own weights included."""
    r = grid_record(res, case_key, label)
    return None if r is None or r["peak_bytes"] is None else r["peak_bytes"] + r["weights_bytes"]


def step_targets(profile, res: dict) -> None:
    t = []
    ours, nemo = report.best(res, "ours"), report.best(res, "nemo")  # (label, case, x real time, TFLOP/s)
    if ours and nemo:
        ratio = ours[2] / nemo[2]
        t.append({"target": f"throughput >= {TARGETS['throughput_vs_nemo_best']:g}x NeMo's best on the same card",
                  "figure": f"ours {ours[2]:.0f}x RT ({ours[0]}, {ours[1]}) vs NeMo {nemo[2]:.0f}x RT ({nemo[0]}, {nemo[1]}): "
                            f"{ratio:.2f}x", "met": ratio >= TARGETS["throughput_vs_nemo_best"]})
        t.append({"target": f"throughput >= {TARGETS['throughput_rt']:g}x real time",
                  "figure": f"{ours[2]:.0f}x RT", "met": ours[2] >= TARGETS["throughput_rt"]})
    key5 = Case(5, 1).key if profile.name == "full" else profile.memory_cases[0].key
    key16 = Case(5, 16).key if profile.name == "full" else profile.memory_cases[-1].key
    lat32, lat16, nemo32 = (latency_ms(res, key5, lb) for lb in ("ours fp32", "ours bf16", "NeMo fp32"))
    if lat32 is not None:
        met = lat32 <= TARGETS["latency_1x5s_ms"]
        alt = lat16 is not None and lat16 <= TARGETS["latency_1x5s_ms"]
        figure = f"fp32 {lat32:.1f} ms" + (f", bf16 {lat16:.1f} ms" if lat16 is not None else "")
        graphed = {c["dtype"]: c["encode"]["graph_ms"]["median"] + c["decode"]["graph_ms"]["median"]
                   for c in res["graphs"]["cases"] if c.get("case") == key5 and "encode" in c}
        figure += "".join(f", {d} as CUDA graphs {ms:.1f} ms" for d, ms in graphed.items())
        figure += f" (NeMo fp32 {nemo32:.1f} ms)" if nemo32 is not None else ""
        in_graphs = any(ms <= TARGETS["latency_1x5s_ms"] for ms in graphed.values())
        t.append({"target": f"batch 1 x 5 s round trip <= {TARGETS['latency_1x5s_ms']:g} ms ({key5})", "figure": figure,
                  "met": True if met else ("bf16 only" if alt else ("as CUDA graphs only" if in_graphs else False))})
    mem = peak_incl_weights(res, key16, "ours fp32")
    if mem is not None:
        nm = peak_incl_weights(res, key16, "NeMo fp32")
        chunked = peak_incl_weights(res, key16, "ours fp32-chunk1s")
        met = mem <= TARGETS["peak_16x5s_gb"] * 1e9
        t.append({"target": f"peak memory at batch 16 x 5 s <= {TARGETS['peak_16x5s_gb']:g} GB ({key16}, fp32, incl. weights)",
                  "figure": f"{mem / 1e9:.2f} GB" + (f", in 1 s chunks {chunked / 1e9:.2f} GB" if chunked else "")
                            + (f" (NeMo {nm / 1e9:.2f} GB)" if nm else ""),
                  "met": True if met else ("in 1 s chunks only" if chunked and chunked <= TARGETS["peak_16x5s_gb"] * 1e9 else False)})
    res["targets"] = t


# ----------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------
def new_results(args, profile, info) -> dict:
    return {"format": 1, "profile": profile.name, "budget_s": args.budget_s, "machine": info,
            "settings": {"tf32": "off (torch.backends.cuda.matmul.allow_tf32 = cudnn.allow_tf32 = False) except the tf32 variants",
                         "cudnn_benchmark": "off (torch's default) except in the cudnn.benchmark step",
                         "timing": "device events (CUDA) / perf_counter (CPU), round trip = encode + decode back to back"},
            "model": {}, "parity": {"rows": []}, "half": {"rows": []}, "grid": {"impls": [], "cases": []},
            "sweep": {"cases": []}, "cudnn_benchmark": {"cases": []}, "graphs": {"cases": []}, "compile": {"cases": []},
            "targets": [], "steps": {}, "errors": []}


def main(argv=None) -> int:
    global CLOCK
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the reports")
    ap.add_argument("--budget-s", type=float, default=330.0, help="wall-clock budget for the whole run (default 330)")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--tiny", action="store_true", help="reduced-width fixture model and short inputs (tests the script)")
    ap.add_argument("--nemo", default=None, help="nemo-toolkit wheel or nemo package folder (default: .devicecarry/, the oracle venv)")
    ap.add_argument("--compile", choices=("auto", "on", "off"), default="auto", help="torch.compile step (auto: CUDA only)")
    ap.add_argument("--tag", default="", help="appended to the report names (a second, partial run: e.g. --steps graphs,compile --tag extra)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's on CUDA runs; 1 with --device cpu, since a shared "
                         "machine's busy cores stall multi-threaded ops and the tiny model gains nothing from more)")
    ap.add_argument("--steps", default="parity,half,grid,sweep,graphs,cudnn_benchmark,compile",
                    help="comma list of steps to run (default all)")
    args = ap.parse_args(argv)
    CLOCK = Clock(args.budget_s)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device available (use --device cpu --tiny to test the script)", file=sys.stderr)
        return 2
    # contracts §5: CUDA float32 parity is defined with TF32 off; the tf32 variants switch it on locally
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    profile = TINY if args.tiny else FULL
    info = machine_info(device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = new_results(args, profile, info)
    stem = info["slug"] + ("-tiny" if args.tiny else "") + (f"-{args.tag}" if args.tag else "")

    def write():
        res["elapsed_s"] = round(CLOCK.elapsed(), 1)
        report.write_all(res, out, stem)

    log(f"{info['card']} | torch {info['torch']} CUDA {info['cuda']} cuDNN {info['cudnn']} | python {info['python']} | "
        f"profile {profile.name}, budget {args.budget_s:.0f} s -> {out}/*-cuda-{stem}.*")
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEP_END) - {"parity", "half"})
    if unknown:
        ap.error(f"--steps: unknown {unknown}; known: parity, half, {', '.join(STEP_END)}")
    with tempfile.TemporaryDirectory(prefix="nanocodec-cuda-") as work:
        t0 = time.monotonic()
        try:
            models = build_models(profile.model, args.nemo, Path(work), log=log)
        except Exception as e:  # noqa: BLE001  nothing can run without the models: report and stop
            res["errors"].append({"step": "setup", "error": err_text(e), "traceback": traceback.format_exc()[-4000:]})
            write()
            log(f"setup failed: {err_text(e)}")
            return 1
        res["model"] = {"name": models.name, "seed": models.seed, "nemo_state_sha256": models.weights_sha256,
                        "nemo_source": models.mods.source, "nemo_version": models.mods.version, "einops": models.mods.einops,
                        "params": models.ours(torch.device("cpu")).num_parameters(), "notes": models.notes,
                        "build_s": round(time.monotonic() - t0, 1)}
        log(f"models built in {time.monotonic() - t0:.1f} s; weights sha256 {models.weights_sha256[:16]}")
        write()
        runners = {
            "parity": lambda: step_parity(models, profile, device, res),
            "half": lambda: step_half(models, profile, device, res),
            "grid": lambda: step_grid(models, profile, device, res, write),
            "sweep": lambda: step_sweep(models, profile, device, res, write),
            "cudnn_benchmark": lambda: step_cudnn_benchmark(models, profile, device, res, write),
            "graphs": lambda: step_graphs(models, profile, device, res, write),
            "compile": lambda: step_compile(models, profile, device, res, write,
                                            args.compile == "on" or (args.compile == "auto" and device.type == "cuda")),
        }
        for name in steps:
            t0 = time.monotonic()
            log(f"--- {name} ({CLOCK.left():.0f} s of budget left)")
            try:
                runners[name]()
                res["steps"][name] = {"s": round(time.monotonic() - t0, 1)}
            except Exception as e:  # noqa: BLE001  one step's failure must not cost the others
                res["steps"][name] = {"s": round(time.monotonic() - t0, 1), "error": err_text(e)}
                res["errors"].append({"step": name, "error": err_text(e), "traceback": traceback.format_exc()[-4000:]})
                log(f"{name} failed: {err_text(e)}")
                free(device)
            step_targets(profile, res)
            write()
    print(report.summary(res), flush=True)
    log(f"done in {CLOCK.elapsed():.0f} s; reports in {out}")
    return 0 if res["parity"].get("pass") and not res["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
