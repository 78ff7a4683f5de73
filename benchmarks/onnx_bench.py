"""ONNX Runtime vs our torch path on the full-size 0.6 kbps model (issue 22): parity and speed.

    .venv/bin/python benchmarks/onnx_bench.py [--rounds 3] [--out reports]

Needs `cache/fixtures-full/nano0p6_full.nemo` (`make fixtures FULL=1`). Converts and exports it (export time
reported), then at 1 and 2 threads times offline encode and decode of 10 s of speech and 1- and 25-frame decoder
steps, our torch path and OnnxCodec in interleaved rounds (load from other work falls on both alike). Parity:
ORT against NeMo's recordings (contracts §5) and our torch path. NeMo's own speed is `make bench`'s. Writes
reports/onnx-<cpu>.md and .json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from common import SR, loadavg, loadavg_text, speech, table, write_atomic  # noqa: E402

from nanocodec import AudioCodecModel  # noqa: E402
from nanocodec.fileio.hub import resolve  # noqa: E402
from nanocodec.onnx import OnnxCodec  # noqa: E402
from nanocodec.onnx.export import export_onnx  # noqa: E402
from parity import compare  # noqa: E402
from parity.machine import cpu_name, cpu_vendor  # noqa: E402

FULL = REPO / "cache" / "fixtures-full"
CACHE = REPO / "cache" / "onnx-bench"
SECONDS = 10.0
STEPS = {1: 13, 25: 2}  # frames per step -> steps timed per round (13 frames ~ 1 s, 25 frames = 2 s of audio)


def prepare() -> tuple[Path, Path, dict]:
    """The converted folder (cached) and a fresh export of it, timed (the export time is a figure)."""
    nemo = FULL / "nano0p6_full.nemo"
    if not nemo.is_file():
        sys.exit(f"{nemo} is missing: parity/oracle/.venv/bin/python parity/oracle/build_fixtures.py --full --skip-small")
    folder, onnx_dir = resolve(nemo, cache_dir=REPO / "cache"), CACHE / "nano0p6_full-onnx"
    start = time.perf_counter()
    report = export_onnx(folder, onnx_dir, overwrite=True)
    return folder, onnx_dir, {"total": time.perf_counter() - start, **report.seconds}


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: every thread's, so at 1 thread a figure that load
    from other processes inflates far less than the wall clock)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def steps(codec, tokens, frames: int, count: int) -> None:
    """`count` consecutive steps of `frames` frames from the start of a fresh stream (torch's or ORT's)."""
    dec = codec.stream_decoder(1)
    for i in range(count):
        dec.step(tokens[:, :, i * frames : (i + 1) * frames])


def measure(model, codec, audio, tokens, rounds: int) -> dict:
    """Interleaved rounds: every operation once on torch then once on ORT, `rounds` times; medians
    of wall and CPU seconds (per step for the decoder steps)."""
    t_audio, t_tokens = torch.from_numpy(audio), torch.from_numpy(tokens)
    ops = {"encode": (1, lambda: model.encode(t_audio), lambda: codec.encode(audio)),  # name: (calls in one timing, torch, ORT)
           "decode": (1, lambda: model.decode(t_tokens), lambda: codec.decode(tokens))}
    for frames, count in STEPS.items():
        ops[f"step_{frames}"] = (count, lambda f=frames, c=count: steps(model, t_tokens, f, c), lambda f=frames, c=count: steps(codec, tokens, f, c))
    # warm-up on 1 s (first calls allocate, pack weights, size ORT's arena)
    model.decode(t_tokens[..., :13]), codec.decode(tokens[..., :13])
    model.encode(t_audio[:SR]), codec.encode(audio[:SR])
    times = {op: {"torch": [], "ort": []} for op in ops}
    for _ in range(rounds):
        for name, (per, run_torch, run_ort) in ops.items():
            for side, fn in (("torch", run_torch), ("ort", run_ort)):
                wall, cpu = timed(fn)
                times[name][side].append((wall / per, cpu / per))
                print(f"  {name} {side}: wall {wall / per:.3f} s, cpu {cpu / per:.3f} s", flush=True)
    return {op: {side: {"wall": statistics.median(w for w, _ in v), "cpu": statistics.median(c for _, c in v), "samples": v}
                 for side, v in sides.items()} for op, sides in times.items()}


def parity(model, codec, audio, tokens) -> dict:
    """ORT against NeMo's recordings of the full-size model, and against our torch path on 10 s."""
    from safetensors.numpy import load_file

    from parity.fixtures import read_input

    nemo = compare.TokenReport()
    nemo_audio = 0.0
    for item in sorted(p.stem for p in (FULL / "refs" / "nano0p6_full").glob("*.safetensors")):
        ref = load_file(str(FULL / "refs" / "nano0p6_full" / f"{item}.safetensors"))
        ours, _ = codec.encode(read_input(item))
        nemo = nemo.merge(compare.compare_tokens(ours, ref["tokens"], ref["prerounding"], ref["tokens_len"]))
        decoded, _ = codec.decode(ref["tokens"], ref["tokens_len"])
        nemo_audio = max(nemo_audio, compare.max_abs_error(decoded.reshape(ref["decoded"].shape), ref["decoded"]))
    with torch.inference_mode():
        latents, frames = model.encode_latents(torch.from_numpy(audio)[None])
        pre = model.quantizer.prerounding(latents).reshape(1, -1, latents.shape[-1]).numpy()
        torch_tokens = model.quantizer.encode(latents, frames).numpy()
    vs_torch = compare.compare_tokens(codec.encode(audio).tokens, torch_tokens, pre)
    offline = model.decode(torch.from_numpy(tokens), chunk_seconds=None).audio.numpy()
    ort_audio = codec.decode(tokens).audio
    dec = codec.stream_decoder(1)
    steps, at, sizes = [], 0, [1, 2, 3, 5, 8, 13]
    while at < tokens.shape[-1]:
        n = sizes[len(steps) % len(sizes)]
        steps.append(dec.step(tokens[:, :, at : at + n]))
        at += n
    return {
        "nemo": {"tokens": nemo.to_dict(), "decode_max_abs": nemo_audio},
        "torch_10s": {"tokens": vs_torch.to_dict(),
                      "decode_max_abs": compare.max_abs_error(ort_audio, offline),
                      "steps_max_abs": compare.max_abs_error(np.concatenate(steps, -1), offline),
                      "decode_snr_db": compare.snr_db(ort_audio, offline)},
    }


def render(result: dict) -> str:
    p, m = result["parity"], result["machine"]
    lines = [f"# ONNX Runtime vs nanocodec's torch path — {m['cpu']}", "",
             f"Full-size 0.6 kbps NanoCodec (NeMo-built seeded weights, `cache/fixtures-full`), float32, batch 1, "
             f"10 s of speech. Machine: {m['cpu']}, {m['cores']} cores, **shared with other workers while this ran** "
             f"(load average {loadavg_text(m['load_before'])} before, {loadavg_text(m['load_after'])} after): torch and ORT ran in "
             f"interleaved rounds, so their ratios compare; absolute times are not this CPU's best. Median of "
             f"{result['rounds']} rounds. torch {result['versions']['torch']}, onnxruntime {result['versions']['onnxruntime']}, "
             f"opset {result['opset']}.", ""]
    e = result["export_seconds"]
    lines += [f"Export (`nanocodec export`'s code: TorchScript exporter, 1 torch thread, onnx.checker), on this "
              f"shared machine: {e['total']:.1f} s wall in all (loading included); "
              + ", ".join(f"{k} {v:.1f} s" for k, v in e.items() if k != "total") + ".", ""]
    lines += ["## Parity", ""]
    nt, tt = p["nemo"]["tokens"], p["torch_10s"]["tokens"]
    lines += table(["comparison", "tokens", "boundary flips (explained)", "unexplained", "audio max abs"], [
        ["ORT vs NeMo's recordings (speech 0.5 s, 4 s, 1765 samples)", f"{nt['matched']}/{nt['tokens']}", nt["explained"],
         nt["unexplained"], f"{p['nemo']['decode_max_abs']:.2e} (decode of NeMo's tokens)"],
        ["ORT vs our torch path, 10 s", f"{tt['matched']}/{tt['tokens']}", tt["explained"], tt["unexplained"],
         f"{p['torch_10s']['decode_max_abs']:.2e} decode ({p['torch_10s']['decode_snr_db']:.0f} dB); "
         f"{p['torch_10s']['steps_max_abs']:.2e} steps of 1-13 frames vs offline"],
    ]) + ["", "## Speed", ""]
    rows, speed = [], result["speed"]
    for threads, ops in speed.items():
        for op, v in ops.items():  # encode, decode, then the steps: measure()'s order
            step = op.startswith("step")
            show = (lambda x: f"{x * 1000:.0f} ms") if step else (lambda x: f"{x:.2f} s")
            rows.append([threads, f"decoder step, {op[5:]} frame(s) (per step)" if step else f"{op} 10 s",
                         show(v["torch"]["wall"]), show(v["ort"]["wall"]), f"**{v['torch']['wall'] / v['ort']['wall']:.2f}x**",
                         show(v["torch"]["cpu"]), show(v["ort"]["cpu"]), f"{v['torch']['cpu'] / v['ort']['cpu']:.2f}x"])
    lines += table(["threads", "operation", "torch wall", "ORT wall", "ORT speed-up (wall)", "torch CPU", "ORT CPU",
                    "ORT speed-up (CPU)"], rows)
    if "1" in speed and "2" in speed:
        slow = {side: speed["2"]["decode"][side]["wall"] / speed["1"]["decode"][side]["wall"] for side in ("torch", "ort")}
        lines += ["", f"2 threads vs 1, decode wall time: torch {slow['torch']:.1f}x, ORT {slow['ort']:.1f}x. On a loaded machine "
                  "torch's OpenMP threads can wait on (and spin for) cores that other processes hold, ORT's do not spin "
                  "(`session.intra_op.allow_spinning=0`): there the 2-thread rows measure contention more than kernels; "
                  "the 1-thread rows compare the kernels."]
    lines += ["", "CPU: the process's CPU time over all its threads (at 1 thread the figure other processes' load "
              "inflates least; at 2 threads it adds both threads' time, so compare wall times there)."]
    lines += ["", "torch: `AudioCodecModel` on the default (cpu) backend, `chunk_seconds=\"auto\"`, its "
              "`stream_decoder` for steps. ORT: `OnnxCodec(threads=N)` (intra-op N, inter-op 1, no spinning), "
              "CPU execution provider, graphs exported from the reference (NCW) model.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out", default=str(REPO / "reports"))
    args = ap.parse_args(argv)
    import onnxruntime

    load_before = loadavg()
    folder, onnx_dir, export_seconds = prepare()
    audio = speech(int(SECONDS * SR))
    result = {"rounds": args.rounds, "export_seconds": export_seconds, "speed": {},
              "versions": {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}}
    tokens = None
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        start = time.perf_counter()
        model = AudioCodecModel.from_pretrained(folder)  # the backend decided at this thread count
        codec = OnnxCodec.from_pretrained(onnx_dir, threads=threads)
        print(f"{threads} thread(s): loaded in {time.perf_counter() - start:.1f} s", flush=True)
        if tokens is None:
            tokens = model.encode(torch.from_numpy(audio)).tokens.numpy()  # 125 frames: more than STEPS use
            result["parity"] = parity(model, codec, audio, tokens)
            result["opset"] = codec.config["opset"]
            print(f"parity done at {time.perf_counter() - start:.1f} s", flush=True)
        result["speed"][str(threads)] = measure(model, codec, audio, tokens, args.rounds)
    result["machine"] = {"cpu": cpu_name(), "cores": os.cpu_count(), "load_before": load_before, "load_after": loadavg()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"onnx-{cpu_vendor()}"
    write_atomic(out / f"{stem}.json", json.dumps(result, indent=1, sort_keys=True, default=float) + "\n")
    write_atomic(out / f"{stem}.md", render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
