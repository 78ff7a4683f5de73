"""Issue 7's CUDA half and CUDA parity, in one prepared command for a short GPU lease (benchmarks/DEVICE.md).

    PYTHONUNBUFFERED=1 python3 benchmarks/cuda_device.py --out $OUT [--budget-s 330] [--device cuda] [--tiny]

Steps, each within its share of a wall-clock budget, the reports rewritten after each (a run cut short still
leaves what it measured): the seeded full-size model built in NeMo's own modules and in ours
(device_setup.py); parity, float32 with TF32 off (contracts §5, CUDA), for 1 s, 5 s and a ragged batch in both
batch modes, with each side against itself on the CPU for context; half precision and TF32 (reported); the
benchmark grid (ours vs NeMo interleaved, device events, warm-up, medians, peak memory per case); our
encode/decode as CUDA graphs; the streaming decoder's 1-frame steps at 1, 8 and 64 slots (issue 21: p50/p99,
eager and as a CUDA graph); issue 7's targets. Writes $OUT/parity-cuda-<card>.md, bench-cuda-<card>.md and
.json (cuda_device_report.py). `--device cpu --tiny` runs the same code (less the CUDA-only steps) on the
committed reduced-width fixture in well under 2 minutes: that is how tests/test_cuda_device_script.py checks
this script without a GPU.
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
# the repository's packages first, then this folder's modules as top-level names (`benchmarks` has no
# __init__.py: a namespace package, which any regular package of that name on the device would shadow)
for _p in (str(HERE), str(HERE.parent)):
    if _p in sys.path:
        sys.path.remove(_p)
    sys.path.insert(0, _p)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import cuda_device_report as report  # noqa: E402
from common import ISSUE_GFLOP_PER_S, SR, Case, batch_items, speech, stats  # noqa: E402
from device_setup import build_models, machine_info  # noqa: E402
from nanocodec.precision import precision_scope  # noqa: E402
from parity import compare  # noqa: E402

CUDA_AUDIO_MAX_ABS_TOL = 1e-4  # contracts §5, CUDA float32 with TF32 off
TARGETS = {"throughput_vs_nemo_best": 2.0, "throughput_rt": 1000.0, "latency_1x5s_ms": 25.0, "peak_16x5s_gb": 1.0}
# the budget fraction by which a step must have started its last case (the targets' figures first; graph
# capture after the grid, since a capture failing inside the library could leave the CUDA context unusable)
STEP_END = {"grid": 0.7, "graphs": 0.82, "stream": 0.95}


@dataclass(frozen=True)
class Profile:
    name: str
    model: str  # parity/oracle/build_fixtures.py's model name
    parity_seconds: tuple  # single items
    ragged_seconds: tuple  # one ragged batch
    half_seconds: tuple
    grid: tuple  # benchmark cases in run order (the headline and the memory table first)
    memory_cases: tuple  # the seed's memory table
    stream_slots: tuple  # streaming decoder slots
    stream_steps: tuple  # (timed, warm-up) 1-frame steps
    case_target_s: float  # timed seconds per case and implementation
    max_reps: int


FULL = Profile("full", "nano0p6_full", (1.0, 5.0), (5.0, 2.3, 1.0 + 7 / SR, 0.37), (1.0, 5.0, 10.0),
               (Case(5, 1), Case(5, 16), Case(5, 4), Case(1, 1), Case(1, 4), Case(1, 16), Case(10, 1), Case(30, 1), Case(60, 1)),
               (Case(5, 1), Case(5, 4), Case(5, 16)), (1, 8, 64), (200, 20), 1.0, 15)
TINY = Profile("tiny", "nano0p6_replicate", (0.3, 1.0), (1.0, 0.5, 0.2 + 7 / SR), (1.0,), (Case(1, 1), Case(1, 4), Case(0.5, 1)),
               (Case(1, 1), Case(1, 4)), (1, 8), (10, 3), 0.15, 3)
T0, BUDGET = time.monotonic(), 0.0  # set by main()


def elapsed() -> float:
    return time.monotonic() - T0


def left(step: str | None = None) -> float:
    return BUDGET * (STEP_END[step] if step else 1.0) - elapsed()


def log(msg: str) -> None:
    print(f"[cuda_device {time.strftime('%H:%M:%S')} +{elapsed():6.1f}s] {msg}", flush=True)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mark(device):
    """A time mark: a recorded CUDA event (the work is asynchronous), else perf_counter."""
    if device.type != "cuda":
        return time.perf_counter()
    e = torch.cuda.Event(enable_timing=True)
    e.record()
    return e


def ms(a, b) -> float:
    return (b - a) * 1000.0 if isinstance(a, float) else a.elapsed_time(b)


def free(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def np32(x) -> np.ndarray:
    return x.detach().float().cpu().numpy()


def wave(x) -> np.ndarray:
    """Decoded audio as [B, T] float32: ours returns [B,1,T], NeMo [B,T]."""
    return np32(x).reshape(x.shape[0], -1)


def err_text(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:300] if lines else ''}"


# ----------------------------------------------------------------------------------------------
# one side in one precision, behind one interface
# ----------------------------------------------------------------------------------------------
@dataclass
class Impl:
    label: str
    side: str  # ours | nemo
    model: object
    weights_bytes: int
    tf32: bool = False
    autocast: torch.dtype | None = None
    input_dtype: torch.dtype = torch.float32
    chunk_seconds: float | str | None = "auto"  # ours: encode/decode in chunks of this many seconds

    def ctx(self, device):
        """inference mode, the precision policy (contracts §10: TF32 only for the tf32 variants), and NeMo's
        autocast variant."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(precision_scope(device, self.model.dtype, allow_tf32=self.tf32))
        if self.autocast is not None:
            stack.enter_context(torch.autocast(device.type, dtype=self.autocast))
        return stack

    def encode(self, audio, lens, compat=False):
        with self.ctx(audio.device):
            if self.side == "ours":
                return self.model.encode(audio, lens, nemo_batch_compat=compat, chunk_seconds=self.chunk_seconds)
            return self.model.encode(audio=audio.to(self.input_dtype), audio_len=lens)

    def decode(self, tokens, tokens_len):
        with self.ctx(tokens.device):
            if self.side == "ours":
                return self.model.decode(tokens, tokens_len, chunk_seconds=self.chunk_seconds)[0]
            return self.model.decode(tokens=tokens, tokens_len=tokens_len)[0]

    def latents(self, audio, lens, compat=False):
        with self.ctx(audio.device):
            if self.side == "ours":
                return self.model.encode_latents(audio, lens, nemo_batch_compat=compat)[0]
            return self.model.encode_audio(audio=audio.to(self.input_dtype), audio_len=lens)[0]


def make_impl(models, side: str, precision: str, device) -> Impl:
    """ours: fp32 | tf32 | bf16 | fp16 | fp32-chunk1s (exact 1 s chunks: the lever for peak memory at batch 16);
    NeMo: fp32 | tf32 | bf16-autocast (torch.autocast) | bf16-cast (the model cast to bfloat16)."""
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "bf16-cast": torch.bfloat16}
    m = (models.ours if side == "ours" else models.nemo)(device, dtypes.get(precision, torch.float32))
    size = sum(t.numel() * t.element_size() for t in list(m.parameters()) + list(m.buffers()))
    if side == "ours":
        return Impl(f"ours {precision}", side, m, size, tf32=precision == "tf32",
                    chunk_seconds=1.0 if precision == "fp32-chunk1s" else "auto")
    return Impl(f"NeMo {precision}", side, m, size, tf32=precision == "tf32", input_dtype=m.dtype,
                autocast=torch.bfloat16 if precision == "bf16-autocast" else None)


def batch_of(items: list, device, junk: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded [B,T] (or junk past each length, as the parity fixtures have), int64 lengths."""
    n = max(len(x) for x in items)
    out = (np.random.default_rng(777).uniform(-0.5, 0.5, (len(items), n)) if junk else np.zeros((len(items), n))).astype(np.float32)
    for i, x in enumerate(items):
        out[i, :len(x)] = x
    return torch.from_numpy(out).to(device), torch.tensor([len(x) for x in items], device=device)


# ----------------------------------------------------------------------------------------------
# parity (gated) and half precision (reported)
# ----------------------------------------------------------------------------------------------
def run_side(impl: Impl, audio, lens, ref=None, compat=False, decode=True) -> dict:
    """latents, tokens, and the decode of the reference's tokens (the same tokens for both sides: contracts §5;
    a side's own tokens when it is the reference)."""
    tokens, tokens_len = impl.encode(audio, lens, compat)
    out = {"latents": impl.latents(audio, lens, compat), "tokens": tokens, "tokens_len": tokens_len}
    if decode:
        src = ref or out
        out["audio"] = impl.decode(src["tokens"].to(audio.device), src["tokens_len"].to(audio.device))
    return out


def compare_sides(models, name: str, kind: str, ours: dict, ref: dict, gate: bool) -> dict:
    # NeMo's FSQ pre-rounding values of the reference latents, [B, G*D, F]: our quantizer computes NeMo's float32
    # expression op for op, and the boundary rule reads them
    pre = models.ours(torch.device("cpu")).quantizer.prerounding(ref["latents"].detach().float().cpu())
    tok = compare.compare_tokens(np32(ours["tokens"]).astype(np.int64), np32(ref["tokens"]).astype(np.int64),
                                 pre.reshape(pre.shape[0], -1, pre.shape[-1]).numpy(), np32(ref["tokens_len"]).astype(np.int64))
    lat = compare.latent_rel_error(np32(ours["latents"]), np32(ref["latents"]))
    a, r = wave(ours["audio"]), wave(ref["audio"])
    err = compare.max_abs_error(a, r)
    return {"input": name, "kind": kind, "gate": gate, "ok": bool(tok.ok and lat <= compare.LATENT_REL_TOL and err <= CUDA_AUDIO_MAX_ABS_TOL),
            "tokens": tok.to_dict(), "latent_rel_error": lat, "audio_max_abs_error": err, "audio_snr_db": compare.snr_db(a, r),
            "frames": int(np32(ref["tokens_len"]).sum())}


def nemo_per_item(impl: Impl, audio, lens) -> dict:
    """NeMo on each item alone (what ours' default, batch-invariant mode promises), padded to a batch."""
    outs = [run_side(impl, audio[i:i + 1, :int(lens[i])], lens[i:i + 1], decode=False) for i in range(audio.shape[0])]
    f = max(o["tokens"].shape[-1] for o in outs)
    out = {k: torch.cat([torch.nn.functional.pad(o[k], (0, f - o[k].shape[-1])) for o in outs]) for k in ("latents", "tokens")}
    out["tokens_len"] = torch.cat([o["tokens_len"] for o in outs])
    out["audio"] = impl.decode(out["tokens"], out["tokens_len"])
    return out


def parity_rows(models, name: str, items: list, impls: tuple, device) -> list:
    """One input's comparisons: a single item against NeMo (gated) and each side against itself on the CPU
    (context); a ragged batch in both batch modes (gated)."""
    ours_d, nemo_d, ours_c, nemo_c = impls
    dev, cpu = device.type, torch.device("cpu")
    audio, lens = batch_of(items, device, junk=len(items) > 1)
    if len(items) > 1:
        # default mode: item i gets NeMo's encode of that item alone, junk past its length ignored;
        # nemo_batch_compat: NeMo's own batched call on the same tensor, junk included
        ref, nb = nemo_per_item(nemo_d, audio, lens), run_side(nemo_d, audio, lens)
        return [compare_sides(models, name, f"ours-{dev} vs NeMo-{dev} per item (batch-invariant)", run_side(ours_d, audio, lens, ref), ref, True),
                compare_sides(models, name, f"ours-{dev} vs NeMo-{dev} batched (nemo_batch_compat)",
                              run_side(ours_d, audio, lens, nb, compat=True), nb, True)]
    nd = run_side(nemo_d, audio, lens)
    od = run_side(ours_d, audio, lens, nd)
    rows = [compare_sides(models, name, f"ours-{dev} vs NeMo-{dev}", od, nd, gate=True)]
    od["audio"] = ours_d.decode(od["tokens"], od["tokens_len"])  # context: the CPU decodes the device's tokens
    rows.append(compare_sides(models, name, f"ours-{dev} vs ours-cpu", od, run_side(ours_c, audio.cpu(), lens.cpu(), od), gate=False))
    rows.append(compare_sides(models, name, f"NeMo-{dev} vs NeMo-cpu", nd, run_side(nemo_c, audio.cpu(), lens.cpu(), nd), gate=False))
    return rows


def step_parity(models, profile: Profile, device, res: dict, write) -> None:
    impls = tuple(make_impl(models, s, "fp32", d) for d in (device, torch.device("cpu")) for s in ("ours", "nemo"))
    inputs = [(f"speech_{s:g}s", [speech(round(s * SR), offset_s=3.1 * i)]) for i, s in enumerate(profile.parity_seconds)]
    ragged = [speech(round(s * SR), offset_s=1.7 * i + 0.4, gain=0.9 - 0.1 * i) for i, s in enumerate(profile.ragged_seconds)]
    for name, items in inputs + [("ragged_" + "_".join(str(len(x)) for x in ragged), ragged)]:
        t0 = time.monotonic()
        rows = parity_rows(models, name, items, impls, device)
        res["parity"]["rows"] += rows
        log(f"parity {name}: " + "; ".join(f"{r['kind']}: {'PASS' if r['ok'] else 'FAIL'} tokens {r['tokens']['matched']}/"
                                           f"{r['tokens']['tokens']} audio {r['audio_max_abs_error']:.1e}" for r in rows)
            + f" ({time.monotonic() - t0:.1f} s)")
    gated = [r for r in res["parity"]["rows"] if r["gate"]]
    res["parity"]["pass"] = bool(gated) and all(r["ok"] for r in gated)


HALF_VARIANTS = [("ours", "bf16"), ("ours", "fp16"), ("ours", "tf32"), ("nemo", "bf16-autocast"), ("nemo", "bf16-cast"), ("nemo", "tf32")]


def half_row(impl: Impl, name: str, audio, lens, ref: dict) -> dict:
    try:
        out = run_side(impl, audio, lens, ref)
        return {"impl": impl.label, "input": name, "token_match": float((np32(out["tokens"]) == np32(ref["tokens"])).mean()),
                "latent_rel_error": compare.latent_rel_error(np32(out["latents"]), np32(ref["latents"])),
                "decode_snr_db": compare.snr_db(wave(out["audio"]), wave(ref["audio"])),
                "decode_max_abs_error": compare.max_abs_error(wave(out["audio"]), wave(ref["audio"]))}
    except Exception as e:  # noqa: BLE001  a precision the device cannot run is a finding, not a crash
        return {"impl": impl.label, "input": name, "error": err_text(e)}


def step_half(models, profile: Profile, device, res: dict, write) -> None:
    """Each variant against NeMo float32 (TF32 off): token agreement, latents, and the decode of NeMo's tokens."""
    nemo32, rows = make_impl(models, "nemo", "fp32", device), res["half"]["rows"]
    refs = [(f"speech_{s:g}s", *batch_of([speech(round(s * SR), offset_s=5.3 * i)], device, junk=False))
            for i, s in enumerate(profile.half_seconds)]
    refs = [(name, audio, lens, run_side(nemo32, audio, lens)) for name, audio, lens in refs]
    for side, precision in HALF_VARIANTS:
        try:
            impl = make_impl(models, side, precision, device)
        except Exception as e:  # noqa: BLE001  a precision the device cannot run is a finding, not a crash
            rows.append({"impl": f"{side} {precision}", "error": err_text(e)})
            continue
        rows += [half_row(impl, *ref) for ref in refs]
        log(f"half {impl.label}: " + ", ".join(f"{r['input']} tokens {100 * r['token_match']:.1f}% SNR {r['decode_snr_db']:.1f} dB"
                                               for r in rows if r["impl"] == impl.label and "token_match" in r))


# ----------------------------------------------------------------------------------------------
# benchmark
# ----------------------------------------------------------------------------------------------
def case_input(case: Case, device):
    return batch_of(batch_items(case), device, junk=False)


def run_once(impl: Impl, audio, lens) -> tuple[float, float, float]:
    """encode, decode, round trip (the two back to back), ms."""
    dev = audio.device
    sync(dev)
    m0 = mark(dev)
    tokens, tokens_len = impl.encode(audio, lens)
    m1 = mark(dev)
    impl.decode(tokens, tokens_len)
    m2 = mark(dev)
    sync(dev)
    return ms(m0, m1), ms(m1, m2), ms(m0, m2)


def peak_bytes(impl: Impl, audio, lens) -> tuple[int | None, float]:
    """Device memory a round trip needs above what was allocated before (both models' weights are resident
    in this process, so the absolute high-water mark would count the other's too); and its time."""
    dev = audio.device
    if dev.type != "cuda":
        return None, run_once(impl, audio, lens)[2]
    free(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    base = torch.cuda.memory_allocated(dev)
    rt = run_once(impl, audio, lens)[2]
    return torch.cuda.max_memory_allocated(dev) - base, rt


RATE: dict = {}  # (label, batched) -> ms per audio-second of the latest case of that kind (batching changes it)


def bench_case(case: Case, impls: list, device, profile: Profile) -> dict:
    """Peak memory (the first call, also the first warm-up), one more warm-up, then interleaved rounds in
    rotating order; medians. A case starts only if its predicted cost fits what is left of the grid's share."""
    known = [RATE.get((i.label, case.batch > 1), RATE.get((i.label, case.batch == 1))) for i in impls]
    rate = statistics.fmean([r for r in known if r is not None] or [50.0])  # nothing known yet: 20x real time
    if 4 * len(impls) * rate * case.audio_seconds / 1000.0 > left("grid"):
        return {"case": case.key, "skipped": f"budget: {left('grid'):.0f} s left for grid"}
    audio, lens = case_input(case, device)
    out = {"case": case.key, "seconds": case.duration, "batch": case.batch, "audio_seconds": case.audio_seconds, "impls": {}}
    live, warm_ms = [], {}
    for impl in impls:
        try:
            peak, first = peak_bytes(impl, audio, lens)
            warm_ms[impl.label] = run_once(impl, audio, lens)[2]
            RATE[(impl.label, case.batch > 1)] = warm_ms[impl.label] / case.audio_seconds
            out["impls"][impl.label] = {"peak_bytes": peak, "weights_bytes": impl.weights_bytes, "first_call_ms": first,
                                        "encode": [], "decode": [], "roundtrip": []}
            live.append(impl)
        except Exception as e:  # noqa: BLE001  OOM or a failing precision: recorded, the others go on
            out["impls"][impl.label] = {"error": err_text(e)}
            free(device)
    round_s = max(sum(warm_ms[i.label] for i in live) / 1000.0, 1e-4)
    reps = int(min(profile.max_reps, max(3, profile.case_target_s * len(live) / round_s)))
    for r in range(max(2, min(reps, int(left("grid") / round_s))) if live else 0):
        for k in range(len(live)):
            impl = live[(k + r) % len(live)]
            for op, t in zip(("encode", "decode", "roundtrip"), run_once(impl, audio, lens)):
                out["impls"][impl.label][op].append(t)
    for impl in live:
        rec = out["impls"][impl.label]
        rec.update({op: stats(rec[op]) for op in ("encode", "decode", "roundtrip")})
        rec["x_real_time"] = case.audio_seconds / (rec["roundtrip"]["median"] / 1000.0)
        if profile.name == "full":  # issue 7's GFLOP per audio-second holds for the full-size model only
            rec["tflops"] = sum(ISSUE_GFLOP_PER_S.values()) * case.audio_seconds / rec["roundtrip"]["median"]
    free(device)
    return out


GRID_IMPLS = [("ours", "fp32"), ("nemo", "fp32"), ("ours", "bf16"), ("nemo", "bf16-autocast"), ("ours", "fp32-chunk1s")]


def step_grid(models, profile, device, res, write) -> None:
    impls = []
    for side, precision in GRID_IMPLS:
        try:
            impls.append(make_impl(models, side, precision, device))
        except Exception as e:  # noqa: BLE001  a precision the device cannot run is a finding, not a crash
            log(f"{side} {precision}: cannot be built: {err_text(e)}")
    res["grid"]["impls"] = [i.label for i in impls]
    for case in profile.grid:
        res["grid"]["cases"].append(c := bench_case(case, impls, device, profile))
        log("grid " + report.case_line(c))
        write()


def times_ms(fn, reps: int, device) -> list:
    """`reps` calls of fn, each between two synchronizations, ms."""
    out = []
    for _ in range(reps):
        sync(device)
        a = mark(device)
        fn()
        b = mark(device)
        sync(device)
        out.append(ms(a, b))
    return out


def capture(body, device) -> tuple:
    """body() captured as a CUDA graph, after a warm-up off the capture stream (as torch.cuda.graphs requires);
    the graph and body's output, the static tensor each replay rewrites."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(3):
            body()
    torch.cuda.current_stream(device).wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = body()
    return g, out


def budgeted(step: str, need_s: float, cases: list, measure, record: dict, device, write) -> None:
    """measure(case) for each case while `step`'s share of the budget leaves need_s; a skipped or failing case is
    recorded as such (a capture failure is a finding for the library), the reports rewritten after each."""
    for key, case in cases:
        if left(step) < need_s:
            record["cases"].append({**key, "skipped": f"budget: {left(step):.0f} s left"})
            continue
        try:
            r = measure(case)
        except Exception as e:  # noqa: BLE001
            r = {**key, "error": err_text(e), "traceback": traceback.format_exc()[-2500:]}
            log(f"{step} {key}: {err_text(e)}")
        record["cases"].append(r)
        free(device)
        write()


def graph_case(model, case: Case, device, reps: int) -> dict:
    """Our encode and decode captured as CUDA graphs at a fixed shape (whole frames, full lengths: the host-side
    validation and length logic of encode()/decode() stays outside), against the eager calls for equality and time."""
    audio, lens = case_input(case, device)
    result = {"case": case.key, "dtype": str(model.dtype).replace("torch.", "")}
    with torch.inference_mode():
        tokens, tlen = model.encode(audio, lens)
        eager_audio = model.decode(tokens, tlen).audio
        x, out_len = audio.to(model.dtype).unsqueeze(1), tlen * model.samples_per_frame
        bodies = {"encode": (lambda: model.quantizer.encode(model.encoder(x), tlen), lambda: model.encode(audio, lens)),
                  "decode": (lambda: model.decoder(model.quantizer.decode(tokens, tlen).to(model.dtype), out_len),
                             lambda: model.decode(tokens, tlen))}
        for name, (body, eager) in bodies.items():
            g, static_out = capture(body, device)
            g.replay()
            sync(device)
            check = ({"token_match_vs_eager": float((static_out == tokens).float().mean())} if name == "encode"
                     else {"max_abs_error_vs_eager": compare.max_abs_error(wave(static_out), wave(eager_audio))})
            graph_ms, eager_ms = times_ms(g.replay, reps, device), times_ms(eager, reps, device)
            result[name] = {**check, "graph_ms": stats(graph_ms), "eager_ms": stats(eager_ms),
                            "speedup": statistics.median(eager_ms) / statistics.median(graph_ms)}
            del g, static_out
    log(f"graphs {case.key} {result['dtype']}: encode {result['encode']['graph_ms']['median']:.2f} ms (eager "
        f"{result['encode']['eager_ms']['median']:.2f}), decode {result['decode']['graph_ms']['median']:.2f} ms "
        f"(eager {result['decode']['eager_ms']['median']:.2f})")
    return result


def step_graphs(models, profile, device, res, write) -> None:
    if device.type != "cuda":
        res["graphs"]["skipped"] = "CUDA graphs need a CUDA device"
        return
    cases = [({"case": c.key, "dtype": str(d)}, (d, c)) for d in (torch.float32, torch.bfloat16)
             for c in (profile.memory_cases[0], profile.memory_cases[-1])]
    budgeted("graphs", 15, cases, lambda dc: graph_case(models.ours(device, dc[0]), dc[1], device, reps=10 if dc[1].batch == 1 else 4),
             res["graphs"], device, write)


def stream_case(model, n: int, profile: Profile, device) -> dict:
    """1-frame steps of n slots (issue 21): the slots API (`stream_decoder(batch_size=n).step`: token checks, quantizer
    decode, `decoder.step`), the functional step on static state tensors (quantizer decode + `decoder.step`, the new
    state copied back in place) eager and, on CUDA, captured as one CUDA graph. Each path first replays the API's
    warm-up steps from the start of a stream (its max abs error against the API's audio), then is timed."""
    reps, warm = profile.stream_steps
    seq = torch.randint(0, model.codebook_size, (warm, n, model.num_codebooks, 1), generator=torch.Generator().manual_seed(n))
    seq, out = seq.to(device), {"slots": n}
    with torch.inference_mode():
        dec = model.stream_decoder(batch_size=n)
        ref = [dec.step(t) for t in seq]  # the warm-up
        tokens, state = seq[0].clone(), model.decoder.init_state(n)
        times = {"slots API": times_ms(lambda: dec.step(tokens), reps, device)}

        def body():
            audio, new = model.decoder.step(model.quantizer.decode(tokens).to(model.dtype), state)
            for name, t in new.items():
                state[name].copy_(t)
            return audio

        paths = {"functional step": body}
        if device.type == "cuda":
            try:
                g, static_audio = capture(body, device)
                paths["CUDA graph"] = lambda: (g.replay(), static_audio)[1]
            except Exception as e:  # noqa: BLE001  a capture failure is a finding for the library
                out["graph_error"] = err_text(e)
        for name, fn in paths.items():
            for t in state.values():
                t.zero_()
            errs = []
            for t, r in zip(seq, ref):
                tokens.copy_(t)
                errs.append(compare.max_abs_error(wave(fn()), wave(r)))
            out.setdefault("max_abs_error_vs_api", {})[name] = max(errs)
            times[name] = times_ms(fn, reps, device)
    for name, t in times.items():
        out[name] = {**stats(t), "p50": float(np.percentile(t, 50)), "p99": float(np.percentile(t, 99))}
    log(f"stream {n} slots: " + ", ".join(f"{k} p50 {out[k]['p50']:.2f} p99 {out[k]['p99']:.2f} ms" for k in report.STREAM_PATHS if k in out))
    return out


def step_stream(models, profile, device, res, write) -> None:
    model = models.ours(device, torch.float32)
    res["stream"]["frame_ms"] = 1000.0 * model.samples_per_frame / model.sample_rate
    budgeted("stream", 2 if profile.name == "tiny" else 10, [({"slots": n}, n) for n in profile.stream_slots],
             lambda n: stream_case(model, n, profile, device), res["stream"], device, write)


# ----------------------------------------------------------------------------------------------
# issue 7's targets
# ----------------------------------------------------------------------------------------------
def grid_figure(res: dict, key: str, label: str, what: str):
    """A grid case's round-trip median (ms), or its peak incl. own weights (bytes: the seed's memory table's figure)."""
    r = next((c["impls"][label] for c in res["grid"]["cases"] if c["case"] == key and "roundtrip" in c.get("impls", {}).get(label, {})), None)
    if r is None:
        return None
    return r["roundtrip"]["median"] if what == "ms" else (None if r["peak_bytes"] is None else r["peak_bytes"] + r["weights_bytes"])


def throughput_targets(res: dict) -> list:
    ours, nemo = report.best(res, "ours"), report.best(res, "nemo")  # (label, case, x real time, TFLOP/s)
    if not (ours and nemo):
        return []
    ratio = ours[2] / nemo[2]
    return [{"target": f"throughput >= {TARGETS['throughput_vs_nemo_best']:g}x NeMo's best on the same card",
             "figure": f"ours {ours[2]:.0f}x RT ({ours[0]}, {ours[1]}) vs NeMo {nemo[2]:.0f}x RT ({nemo[0]}, {nemo[1]}): {ratio:.2f}x",
             "met": ratio >= TARGETS["throughput_vs_nemo_best"]},
            {"target": f"throughput >= {TARGETS['throughput_rt']:g}x real time", "figure": f"{ours[2]:.0f}x RT",
             "met": ours[2] >= TARGETS["throughput_rt"]}]


def latency_target(res: dict, key5: str) -> list:
    lat32, lat16, nemo32 = (grid_figure(res, key5, lb, "ms") for lb in ("ours fp32", "ours bf16", "NeMo fp32"))
    if lat32 is None:
        return []
    graphed = {c["dtype"]: c["encode"]["graph_ms"]["median"] + c["decode"]["graph_ms"]["median"]
               for c in res["graphs"]["cases"] if c.get("case") == key5 and "encode" in c}
    figure = (f"fp32 {lat32:.1f} ms" + (f", bf16 {lat16:.1f} ms" if lat16 is not None else "")
              + "".join(f", {d} as CUDA graphs {v:.1f} ms" for d, v in graphed.items())
              + (f" (NeMo fp32 {nemo32:.1f} ms)" if nemo32 is not None else ""))
    goal = TARGETS["latency_1x5s_ms"]
    met = True if lat32 <= goal else "bf16 only" if lat16 is not None and lat16 <= goal else (
        "as CUDA graphs only" if any(v <= goal for v in graphed.values()) else False)
    return [{"target": f"batch 1 x 5 s round trip <= {goal:g} ms ({key5})", "figure": figure, "met": met}]


def memory_target(res: dict, key16: str) -> list:
    if (mem := grid_figure(res, key16, "ours fp32", "peak")) is None:
        return []
    nemo_mem, chunked = grid_figure(res, key16, "NeMo fp32", "peak"), grid_figure(res, key16, "ours fp32-chunk1s", "peak")
    goal = TARGETS["peak_16x5s_gb"] * 1e9
    return [{"target": f"peak memory at batch 16 x 5 s <= {TARGETS['peak_16x5s_gb']:g} GB ({key16}, fp32, incl. weights)",
             "figure": f"{mem / 1e9:.2f} GB" + (f", in 1 s chunks {chunked / 1e9:.2f} GB" if chunked else "")
                       + (f" (NeMo {nemo_mem / 1e9:.2f} GB)" if nemo_mem else ""),
             "met": True if mem <= goal else ("in 1 s chunks only" if chunked and chunked <= goal else False)}]


def step_targets(profile, res: dict) -> None:
    key5, key16 = (Case(5, 1).key, Case(5, 16).key) if profile.name == "full" else (profile.memory_cases[0].key, profile.memory_cases[-1].key)
    res["targets"] = throughput_targets(res) + latency_target(res, key5) + memory_target(res, key16)


STEPS = {"parity": step_parity, "half": step_half, "grid": step_grid, "graphs": step_graphs, "stream": step_stream}  # --steps' order


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the reports")
    ap.add_argument("--budget-s", type=float, default=330.0, help="wall-clock budget for the whole run (default 330)")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--tiny", action="store_true", help="reduced-width fixture model and short inputs (tests the script)")
    ap.add_argument("--nemo", help="nemo-toolkit wheel or nemo package folder (default: .devicecarry/, the oracle venv)")
    ap.add_argument("--tag", default="", help="appended to the report names (a second, partial run: --steps graphs,stream --tag extra)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's on CUDA; 1 with --device cpu, since a "
                    "shared machine's busy cores stall multi-threaded ops and the tiny model gains nothing from more)")
    ap.add_argument("--steps", default=",".join(STEPS), help="comma list (default all)")
    args = ap.parse_args(argv)
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    if unknown := sorted(set(args.steps) - set(STEPS)):
        ap.error(f"--steps: unknown {unknown}; known: {', '.join(STEPS)}")
    return args


def model_record(models, t0: float) -> dict:
    return {"name": models.name, "seed": models.seed, "nemo_state_sha256": models.weights_sha256,
            "nemo_source": models.mods.source, "nemo_version": models.mods.version, "einops": models.mods.einops,
            "params": models.ours(torch.device("cpu")).num_parameters(), "notes": models.notes, "build_s": round(time.monotonic() - t0, 1)}


def run_steps(models, steps: list, profile: Profile, device, res: dict, write) -> None:
    for name in steps:
        t0 = time.monotonic()
        log(f"--- {name} ({left():.0f} s of budget left)")
        try:
            STEPS[name](models, profile, device, res, write)
            res["steps"][name] = {"s": round(time.monotonic() - t0, 1)}
        except Exception as e:  # noqa: BLE001  one step's failure must not cost the others
            res["steps"][name] = {"s": round(time.monotonic() - t0, 1), "error": err_text(e)}
            res["errors"].append({"step": name, "error": err_text(e), "traceback": traceback.format_exc()[-4000:]})
            log(f"{name} failed: {err_text(e)}")
            free(device)
        step_targets(profile, res)
        write()


def main(argv=None) -> int:
    global BUDGET, T0
    args = parse_args(argv)
    T0, BUDGET, device = time.monotonic(), args.budget_s, torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device available (use --device cpu --tiny to test the script)", file=sys.stderr)
        return 2
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    profile, info, out = TINY if args.tiny else FULL, machine_info(device), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = info["slug"] + ("-tiny" if args.tiny else "") + (f"-{args.tag}" if args.tag else "")
    res = {"format": 1, "profile": profile.name, "budget_s": args.budget_s, "machine": info, "model": {}, "parity": {"rows": []},
           "half": {"rows": []}, "grid": {"impls": [], "cases": []}, "graphs": {"cases": []}, "stream": {"cases": []},
           "targets": [], "steps": {}, "errors": []}

    def write():
        res["elapsed_s"] = round(elapsed(), 1)
        report.write_all(res, out, stem)

    log(f"{info['card']} | torch {info['torch']} CUDA {info['cuda']} cuDNN {info['cudnn']} | python {info['python']} | "
        f"profile {profile.name}, budget {args.budget_s:.0f} s -> {out}/*-cuda-{stem}.*")
    # contracts §5/§10: CUDA float32 parity is defined with TF32 off; the tf32 variants open their own scopes inside
    with tempfile.TemporaryDirectory(prefix="nanocodec-cuda-") as work, precision_scope(device, allow_tf32=False, cudnn_benchmark=False) as policy:
        res["settings"] = {"precision": policy.record(), "tf32": "off except the tf32 variants (nanocodec.precision)",
                           "cudnn_benchmark": "off (torch's default)",
                           "timing": "device events (CUDA) / perf_counter (CPU), round trip = encode + decode back to back"}
        t0 = time.monotonic()
        try:
            models = build_models(profile.model, args.nemo, Path(work), log=log)
        except Exception as e:  # noqa: BLE001  nothing can run without the models: report and stop
            res["errors"].append({"step": "setup", "error": err_text(e), "traceback": traceback.format_exc()[-4000:]})
            write()
            log(f"setup failed: {err_text(e)}")
            return 1
        res["model"] = model_record(models, t0)
        log(f"models built in {time.monotonic() - t0:.1f} s; weights sha256 {models.weights_sha256[:16]}")
        write()
        run_steps(models, args.steps, profile, device, res, write)
    print(report.summary(res), flush=True)
    log(f"done in {elapsed():.0f} s; reports in {out}")
    return 0 if res["parity"].get("pass") and not res["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
