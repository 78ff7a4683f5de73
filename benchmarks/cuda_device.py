"""Issue 7's CUDA half and CUDA parity, in one prepared command for a short GPU lease (benchmarks/DEVICE.md).

    PYTHONUNBUFFERED=1 python3 benchmarks/cuda_device.py --out $OUT [--budget-s 330] [--device cuda] [--tiny]

Builds the seeded model in NeMo's own modules and in ours (device_setup.py), then: parity (gated) with half precision
and TF32 (reported), the ours-vs-NeMo benchmark grid, the streaming decoder's 1-frame steps. Each step within its share
of a wall-clock budget, the reports (cuda_device_report.py) rewritten after each; the summary is printed last.
`--device cpu --tiny` runs the same code, less the CUDA-only parts, on the committed reduced-width fixture: that is
how tests/test_cuda_device_script.py checks this script without a GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
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
from common import SR, Case, batch_items, speech, stats  # noqa: E402
from device_setup import build_models, machine_info  # noqa: E402
from nanocodec.precision import precision_scope  # noqa: E402
from parity import compare  # noqa: E402

CUDA_AUDIO_MAX_ABS_TOL = 1e-4  # contracts §5, CUDA float32 with TF32 off
TARGETS = {"throughput_vs_nemo_best": 2.0, "throughput_rt": 1000.0, "latency_1x5s_ms": 25.0, "peak_16x5s_gb": 1.0}
# the budget fraction by which a step must have started its last case: the grid (the targets' figures) first
STEP_END = {"grid": 0.75, "stream": 0.95}


@dataclass(frozen=True)
class Profile:
    name: str
    model: str  # parity/oracle/build_fixtures.py's model name
    parity_seconds: tuple  # single items (parity, half precision)
    ragged_seconds: tuple  # one ragged batch
    grid: tuple  # benchmark cases in run order (the targets' first)
    target_cases: tuple  # issue 7's latency and peak-memory cases
    stream_slots: tuple  # streaming decoder slots
    stream_steps: tuple  # (timed, warm-up) 1-frame steps
    case_target_s: float  # timed seconds per case and implementation
    max_reps: int


FULL = Profile("full", "nano0p6_full", (1.0, 5.0), (5.0, 2.3, 1.0 + 7 / SR, 0.37),
               (Case(5, 1), Case(5, 16), Case(5, 4), Case(1, 1), Case(1, 4), Case(1, 16), Case(10, 1), Case(30, 1), Case(60, 1)),
               (Case(5, 1), Case(5, 16)), (1, 8, 64), (200, 20), 1.0, 15)
TINY = Profile("tiny", "nano0p6_replicate", (0.3, 1.0), (1.0, 0.5, 0.2 + 7 / SR), (Case(1, 1), Case(1, 4), Case(0.5, 1)),
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
    chunk_seconds: float | str | None = "auto"  # ours: encode/decode in chunks of this many seconds

    @contextlib.contextmanager
    def ctx(self, device):
        """inference mode, the precision policy (contracts §10: TF32 only for the tf32 variants), NeMo's autocast variant."""
        with (torch.inference_mode(), precision_scope(device, self.model.dtype, allow_tf32=self.tf32),
              torch.autocast(device.type, dtype=self.autocast) if self.autocast else contextlib.nullcontext()):
            yield

    def encode(self, audio, lens, compat=False):
        with self.ctx(audio.device):
            if self.side == "ours":
                return self.model.encode(audio, lens, nemo_batch_compat=compat, chunk_seconds=self.chunk_seconds)
            return self.model.encode(audio=audio.to(self.model.dtype), audio_len=lens)

    def decode(self, tokens, tokens_len):
        with self.ctx(tokens.device):
            if self.side == "ours":
                return self.model.decode(tokens, tokens_len, chunk_seconds=self.chunk_seconds)[0]
            return self.model.decode(tokens=tokens, tokens_len=tokens_len)[0]

    def latents(self, audio, lens, compat=False):
        with self.ctx(audio.device):
            if self.side == "ours":
                return self.model.encode_latents(audio, lens, nemo_batch_compat=compat)[0]
            return self.model.encode_audio(audio=audio.to(self.model.dtype), audio_len=lens)[0]


def label(side: str, precision: str) -> str:
    return f"{'ours' if side == 'ours' else 'NeMo'} {precision}"


def make_impl(models, side: str, precision: str, device) -> Impl:
    """ours: fp32 | tf32 | bf16 | fp16 | fp32-chunk1s (exact 1 s chunks: the lever for peak memory at batch 16);
    NeMo: fp32 | tf32 | bf16-autocast (torch.autocast) | bf16-cast (the model cast to bfloat16)."""
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "bf16-cast": torch.bfloat16}
    m = (models.ours if side == "ours" else models.nemo)(device, dtypes.get(precision, torch.float32))
    size = sum(t.numel() * t.element_size() for t in list(m.parameters()) + list(m.buffers()))
    return Impl(label(side, precision), side, m, size, tf32=precision == "tf32",
                autocast=torch.bfloat16 if precision == "bf16-autocast" else None,
                chunk_seconds=1.0 if precision == "fp32-chunk1s" else "auto")


def batch_of(items: list, device, junk: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded [B,T] (or junk past each length, as the parity fixtures have), int64 lengths."""
    n = max(len(x) for x in items)
    out = (np.random.default_rng(777).uniform(-0.5, 0.5, (len(items), n)) if junk else np.zeros((len(items), n))).astype(np.float32)
    for i, x in enumerate(items):
        out[i, :len(x)] = x
    return torch.from_numpy(out).to(device), torch.tensor([len(x) for x in items], device=device)


# ----------------------------------------------------------------------------------------------
# parity (gated), half precision and TF32 (reported)
# ----------------------------------------------------------------------------------------------
def run_side(impl: Impl, audio, lens, ref=None, compat=False, decode=True) -> dict:
    """latents, tokens, and the decode of the reference's tokens (the same tokens for both sides: contracts §5;
    a side's own tokens when it is the reference)."""
    tokens, tokens_len = impl.encode(audio, lens, compat)
    out = {"latents": impl.latents(audio, lens, compat), "tokens": tokens, "tokens_len": tokens_len}
    if decode:
        src = ref or out
        out["audio"] = impl.decode(src["tokens"], src["tokens_len"])
    return out


def compare_sides(models, name: str, kind: str, ours: dict, ref: dict) -> dict:
    # NeMo's FSQ pre-rounding values of the reference latents, [B, G*D, F]: our quantizer computes NeMo's float32
    # expression op for op, and the boundary rule reads them
    pre = models.ours(torch.device("cpu")).quantizer.prerounding(ref["latents"].detach().float().cpu())
    tok = compare.compare_tokens(np32(ours["tokens"]).astype(np.int64), np32(ref["tokens"]).astype(np.int64),
                                 pre.reshape(pre.shape[0], -1, pre.shape[-1]).numpy(), np32(ref["tokens_len"]).astype(np.int64))
    d = diffs(ours, ref)
    return {"input": name, "kind": kind, "tokens": tok.to_dict(), **d, "frames": int(np32(ref["tokens_len"]).sum()),
            "ok": bool(tok.ok and d["latent_rel_error"] <= compare.LATENT_REL_TOL and d["audio_max_abs_error"] <= CUDA_AUDIO_MAX_ABS_TOL)}


def diffs(out: dict, ref: dict) -> dict:
    """Latents and decoded audio against the reference's."""
    a, r = wave(out["audio"]), wave(ref["audio"])
    return {"latent_rel_error": compare.latent_rel_error(np32(out["latents"]), np32(ref["latents"])),
            "audio_max_abs_error": compare.max_abs_error(a, r), "audio_snr_db": compare.snr_db(a, r)}


def nemo_per_item(impl: Impl, audio, lens) -> dict:
    """NeMo on each item alone (what ours' default, batch-invariant mode promises), padded to a batch."""
    outs = [run_side(impl, audio[i:i + 1, :int(lens[i])], lens[i:i + 1], decode=False) for i in range(audio.shape[0])]
    f = max(o["tokens"].shape[-1] for o in outs)
    out = {k: torch.cat([torch.nn.functional.pad(o[k], (0, f - o[k].shape[-1])) for o in outs]) for k in ("latents", "tokens")}
    out["tokens_len"] = torch.cat([o["tokens_len"] for o in outs])
    out["audio"] = impl.decode(out["tokens"], out["tokens_len"])
    return out


HALF_VARIANTS = [("ours", "bf16"), ("ours", "fp16"), ("ours", "tf32"), ("nemo", "bf16-autocast"), ("nemo", "bf16-cast"), ("nemo", "tf32")]


def half_row(models, side: str, precision: str, name: str, audio, lens, ref: dict) -> dict:
    """A variant against NeMo float32 (TF32 off): token agreement, latents, and the decode of NeMo's tokens."""
    try:
        out = run_side(make_impl(models, side, precision, audio.device), audio, lens, ref)
    except Exception as e:  # noqa: BLE001  a precision the device cannot run is a finding, not a crash
        return {"impl": label(side, precision), "input": name, "error": err_text(e)}
    return {"impl": label(side, precision), "input": name, "token_match": float((np32(out["tokens"]) == np32(ref["tokens"])).mean()),
            **diffs(out, ref)}


def step_parity(models, profile: Profile, device, res: dict, write) -> None:
    """Each single item: ours against NeMo (gated), then every half/TF32 variant against the same NeMo float32
    reference (reported). The ragged batch in both batch modes (gated). The reports rewritten after each input."""
    ours, nemo, dev = make_impl(models, "ours", "fp32", device), make_impl(models, "nemo", "fp32", device), device.type

    def gated(name: str, kind: str, ours_out: dict, ref: dict) -> None:
        res["parity"]["rows"].append(r := compare_sides(models, name, f"ours-{dev} vs NeMo-{dev}{kind}", ours_out, ref))
        log(f"parity {name}{kind}: {'PASS' if r['ok'] else 'FAIL'} tokens {r['tokens']['matched']}/{r['tokens']['tokens']} "
            f"latents {r['latent_rel_error']:.1e} audio {r['audio_max_abs_error']:.1e}")

    for i, s in enumerate(profile.parity_seconds):
        name, (audio, lens) = f"speech_{s:g}s", batch_of([speech(round(s * SR), offset_s=3.1 * i)], device, junk=False)
        ref = run_side(nemo, audio, lens)
        gated(name, "", run_side(ours, audio, lens, ref), ref)
        res["half"]["rows"] += (half := [half_row(models, side, p, name, audio, lens, ref) for side, p in HALF_VARIANTS])
        log(f"half {name}: " + ", ".join(f"{r['impl']} " + (f"tokens {100 * r['token_match']:.1f}% SNR {r['audio_snr_db']:.1f} dB"
                                                           if "token_match" in r else r["error"]) for r in half))
        write()
    ragged = [speech(round(s * SR), offset_s=1.7 * i + 0.4, gain=0.9 - 0.1 * i) for i, s in enumerate(profile.ragged_seconds)]
    name, (audio, lens) = "ragged_" + "_".join(str(len(x)) for x in ragged), batch_of(ragged, device, junk=True)
    # default mode: item i gets NeMo's encode of that item alone, junk past its length ignored;
    # nemo_batch_compat: NeMo's own batched call on the same tensor, junk included
    ref, nb = nemo_per_item(nemo, audio, lens), run_side(nemo, audio, lens)
    gated(name, " per item (batch-invariant)", run_side(ours, audio, lens, ref), ref)
    gated(name, " batched (nemo_batch_compat)", run_side(ours, audio, lens, nb, compat=True), nb)
    res["parity"]["pass"] = all(r["ok"] for r in res["parity"]["rows"])


# ----------------------------------------------------------------------------------------------
# benchmark grid and the streaming decoder's steps
# ----------------------------------------------------------------------------------------------
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


def bench_case(case: Case, impls: list, device, profile: Profile) -> dict:
    """Peak memory (the first call, also the first warm-up), one more warm-up, then interleaved rounds in
    rotating order, as many as fit case_target_s and what is left of the grid's share; medians."""
    audio, lens = batch_of(batch_items(case), device, junk=False)
    out = {"case": case.key, "seconds": case.duration, "batch": case.batch, "audio_seconds": case.audio_seconds, "impls": {}}
    live, warm_ms = [], {}
    for impl in impls:
        try:
            peak, first = peak_bytes(impl, audio, lens)
            warm_ms[impl.label] = run_once(impl, audio, lens)[2]
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
    log("grid " + report.case_line(out))
    return out


GRID_IMPLS = [("ours", "fp32"), ("nemo", "fp32"), ("ours", "bf16"), ("nemo", "bf16-autocast"), ("ours", "fp32-chunk1s")]


def budgeted(step: str, need_s: float, cases: list, measure, record: dict, device, write) -> None:
    """measure(case) for each case while `step`'s share of the budget leaves need_s; a skipped or failing case is
    recorded as such, the reports rewritten after each."""
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


def step_grid(models, profile, device, res, write) -> None:
    impls = []
    for side, precision in GRID_IMPLS:
        try:
            impls.append(make_impl(models, side, precision, device))
        except Exception as e:  # noqa: BLE001  a precision the device cannot run is a finding, not a crash
            log(f"{label(side, precision)}: cannot be built: {err_text(e)}")
    # a case needs its warm-ups and two rounds at least: a few times its timed share
    budgeted("grid", 3 * profile.case_target_s, [({"case": c.key}, c) for c in profile.grid],
             lambda c: bench_case(c, impls, device, profile), res["grid"], device, write)


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
    log(report.stream_line(out))
    return out


def step_stream(models, profile, device, res, write) -> None:
    model = models.ours(device, torch.float32)
    res["stream"]["frame_ms"] = 1000.0 * model.samples_per_frame / model.sample_rate
    # a case: the warm-up replayed and the timed steps on each path, and on CUDA a capture
    budgeted("stream", 10 * profile.case_target_s, [({"slots": n}, n) for n in profile.stream_slots],
             lambda n: stream_case(model, n, profile, device), res["stream"], device, write)


# ----------------------------------------------------------------------------------------------
# issue 7's targets, from the grid's figures so far
# ----------------------------------------------------------------------------------------------
def grid_figure(res: dict, key: str, lb: str, what: str):
    """A grid case's round-trip median (ms), or its peak incl. own weights (bytes: what the memory target counts)."""
    for c in res["grid"]["cases"]:
        if c["case"] == key and "roundtrip" in (r := c.get("impls", {}).get(lb, {})):
            return r["roundtrip"]["median"] if what == "ms" else None if r["peak_bytes"] is None else r["peak_bytes"] + r["weights_bytes"]
    return None


def best(res: dict, side: str):
    """(x real time, label, case) of a side's fastest grid case: NeMo's best is its best in any precision tried."""
    runs = [(r["x_real_time"], lb, c["case"]) for c in res["grid"]["cases"] for lb, r in c.get("impls", {}).items()
            if lb.lower().startswith(side) and "x_real_time" in r]
    return max(runs, default=None)


def targets(profile: Profile, res: dict) -> list:
    """Each target whose figures exist yet; `met` is True, False, or the variant that alone meets it."""
    out, (key1, key16) = [], (c.key for c in profile.target_cases)
    if (ours := best(res, "ours")) and (nemo := best(res, "nemo")):
        ratio, goal = ours[0] / nemo[0], TARGETS["throughput_vs_nemo_best"]
        out += [{"target": f"throughput >= {goal:g}x NeMo's best on the same card", "met": ratio >= goal,
                 "figure": f"ours {ours[0]:.0f}x RT ({ours[1]}, {ours[2]}) vs NeMo {nemo[0]:.0f}x RT ({nemo[1]}, {nemo[2]}): {ratio:.2f}x"},
                {"target": f"throughput >= {TARGETS['throughput_rt']:g}x real time", "figure": f"{ours[0]:.0f}x RT",
                 "met": ours[0] >= TARGETS["throughput_rt"]}]
    if (lat := grid_figure(res, key1, "ours fp32", "ms")) is not None:
        lat16, nemo_lat, goal = grid_figure(res, key1, "ours bf16", "ms"), grid_figure(res, key1, "NeMo fp32", "ms"), TARGETS["latency_1x5s_ms"]
        out.append({"target": f"batch 1 x 5 s round trip <= {goal:g} ms ({key1})",
                    "figure": f"fp32 {lat:.1f} ms" + (f", bf16 {lat16:.1f} ms" if lat16 is not None else "")
                              + (f" (NeMo fp32 {nemo_lat:.1f} ms)" if nemo_lat is not None else ""),
                    "met": True if lat <= goal else "bf16 only" if lat16 is not None and lat16 <= goal else False})
    if (mem := grid_figure(res, key16, "ours fp32", "peak")) is not None:
        nemo_mem, chunked = grid_figure(res, key16, "NeMo fp32", "peak"), grid_figure(res, key16, "ours fp32-chunk1s", "peak")
        goal = TARGETS["peak_16x5s_gb"]
        out.append({"target": f"peak memory at batch 16 x 5 s <= {goal:g} GB ({key16}, fp32, incl. weights)",
                    "figure": f"{mem / 1e9:.2f} GB" + (f", in 1 s chunks {chunked / 1e9:.2f} GB" if chunked else "")
                              + (f" (NeMo {nemo_mem / 1e9:.2f} GB)" if nemo_mem else ""),
                    "met": True if mem <= goal * 1e9 else "in 1 s chunks only" if chunked and chunked <= goal * 1e9 else False})
    return out


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------
STEPS = {"parity": step_parity, "grid": step_grid, "stream": step_stream}  # in run order


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the reports")
    ap.add_argument("--budget-s", type=float, default=330.0, help="wall-clock budget for the whole run (default 330)")
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu (1 thread: the tiny model gains nothing from more)")
    ap.add_argument("--tiny", action="store_true", help="reduced-width fixture model and short inputs (tests the script)")
    ap.add_argument("--nemo", help="nemo-toolkit wheel or nemo package folder (default: .devicecarry/, the oracle venv)")
    return ap.parse_args(argv)


def guarded(name: str, fn, res: dict, device) -> bool:
    """fn() with a failure recorded, not raised: one step's failure must not cost the others. Whether it succeeded."""
    t0 = time.monotonic()
    try:
        fn()
        res["steps"][name] = {"s": round(time.monotonic() - t0, 1)}
        return True
    except Exception as e:  # noqa: BLE001
        res["steps"][name] = {"s": round(time.monotonic() - t0, 1), "error": err_text(e)}
        res["errors"].append({"step": name, "error": err_text(e), "traceback": traceback.format_exc()[-4000:]})
        log(f"{name} failed: {err_text(e)}")
        free(device)
        return False


def model_record(models) -> dict:
    return {"name": models.name, "seed": models.seed, "nemo_state_sha256": models.weights_sha256, "nemo_source": models.mods.source,
            "nemo_version": models.mods.version, "einops": models.mods.einops, "notes": models.notes,
            "params": models.ours(torch.device("cpu")).num_parameters()}


def main(argv=None) -> int:
    global BUDGET, T0
    args = parse_args(argv)
    T0, BUDGET, device = time.monotonic(), args.budget_s, torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device available (use --device cpu --tiny to test the script)", file=sys.stderr)
        return 2
    if device.type == "cpu":
        torch.set_num_threads(1)
    profile, info, out = TINY if args.tiny else FULL, machine_info(device), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem, models = info["slug"] + ("-tiny" if args.tiny else ""), {}
    res = {"profile": profile.name, "budget_s": args.budget_s, "machine": info, "model": {}, "parity": {"rows": []}, "half": {"rows": []},
           "grid": {"cases": []}, "stream": {"cases": []}, "targets": [], "steps": {}, "errors": []}

    def write():
        res["elapsed_s"] = round(elapsed(), 1)
        report.write_all(res, out, stem)

    log(f"{info['card']} | torch {info['torch']} CUDA {info['cuda']} cuDNN {info['cudnn']} | profile {profile.name}, "
        f"budget {args.budget_s:.0f} s -> {out}/*-cuda-{stem}.*")
    # contracts §5/§10: CUDA float32 parity is defined with TF32 off; the tf32 variants open their own scopes inside
    with tempfile.TemporaryDirectory(prefix="nanocodec-cuda-") as work, precision_scope(device, allow_tf32=False, cudnn_benchmark=False) as policy:
        res["precision"] = policy.record()
        if guarded("setup", lambda: models.update(m=build_models(profile.model, args.nemo, Path(work), log=log)), res, device):
            res["model"] = model_record(models["m"])
            log(f"models built in {res['steps']['setup']['s']:.1f} s; weights sha256 {res['model']['nemo_state_sha256'][:16]}; "
                + "; ".join(res["model"]["notes"]))
            write()
            for name, step in STEPS.items():  # nothing can run without the models
                log(f"--- {name} ({left():.0f} s of budget left)")
                guarded(name, lambda: step(models["m"], profile, device, res, write), res, device)
                res["targets"] = targets(profile, res)
                write()
        write()
    print(report.summary(res), flush=True)
    log(f"done in {elapsed():.0f} s; reports in {out}")
    return 0 if res["parity"].get("pass") and not res["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
