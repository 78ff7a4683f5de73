"""Streaming benchmark: per-frame decode latency, time to first audio, and the speed-up over
sliding-window re-decoding (25 new + 15 context frames), measured side by side in one run.

    python benchmarks/streaming.py [--model FOLDER] [--frames 100] [--out reports]

Without --model it uses the full-size 0.6 kbps architecture with random weights (speed does not
depend on weight values). Writes reports/streaming-<device>.md. Not a test: timings are noisy.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # parity/ is a repository package

from nanocodec import AudioCodecModel  # noqa: E402
from parity.machine import cpu_name  # noqa: E402
from nanocodec.presets import DEFAULT_PRESET, PRESETS  # noqa: E402

NEW, CONTEXT = 25, 15  # the sliding window of a public TTS server


def timed(fn, repeat=5):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(model, tokens, threads):
    torch.set_num_threads(threads)
    spf, sr = model.samples_per_frame, model.sample_rate
    frames = tokens.shape[-1]

    def stream_all():
        dec = model.stream_decoder()
        return [dec.step(tokens[:, :, i : i + 1]) for i in range(frames)]

    def stream_steps_of_new():
        dec = model.stream_decoder()
        return [dec.step(tokens[:, :, i : i + NEW]) for i in range(0, frames, NEW)]

    def first_audio():
        model.stream_decoder().step(tokens[:, :, :1])

    def sliding_window():
        # each window re-decodes CONTEXT old frames with NEW new ones and keeps the new audio
        for start in range(0, frames, NEW):
            lo = max(0, start - CONTEXT)
            model.decode(tokens[:, :, lo : start + NEW])

    def sliding_first():
        model.decode(tokens[:, :, :NEW])

    stream_t = timed(stream_all, 3)
    stream_new_t = timed(stream_steps_of_new, 3)
    window_t = timed(sliding_window, 3)
    return {
        "threads": threads,
        "stream_per_frame_ms": 1000 * stream_t / frames,
        "stream_first_audio_ms": 1000 * timed(first_audio),
        "stream25_per_frame_ms": 1000 * stream_new_t / frames,
        "window_per_frame_ms": 1000 * window_t / frames,
        "window_first_audio_ms": 1000 * timed(sliding_first, 3),
        "frame_ms": 1000 * spf / sr,
        "speedup": window_t / stream_new_t,
    }


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--out", type=Path, default=Path("reports"))
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    if args.model:
        model = AudioCodecModel.from_pretrained(args.model)
        name = args.model
    else:
        model = AudioCodecModel(PRESETS[DEFAULT_PRESET].config())
        name = f"{DEFAULT_PRESET} architecture, random weights"
    tokens = torch.randint(0, model.codebook_size, (1, model.num_codebooks, args.frames))
    model.decode(tokens[:, :, :4])  # warm-up
    rows = [measure(model, tokens, t) for t in (1, 2)]
    enc = model.stream_encoder()
    lines = [
        f"# Streaming decode: {cpu_name()}",
        "",
        f"Model: {name}; {args.frames} frames, batch 1, float32, torch {torch.__version__}. "
        f"One frame is {rows[0]['frame_ms']:.0f} ms of audio. Medians of repeated runs in one process "
        "(`python benchmarks/streaming.py`); absolute times on shared machines are noisy, ratios less so.",
        "",
        "| threads | streaming 1 frame a step: per frame | streaming: first audio | streaming 25 frames a step: per frame | sliding window (25 new + 15 context): per frame | sliding window: first audio (25 frames) | speed-up, 25-frame steps vs window |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['threads']} | {r['stream_per_frame_ms']:.1f} ms | {r['stream_first_audio_ms']:.1f} ms | {r['stream25_per_frame_ms']:.1f} ms | "
            f"{r['window_per_frame_ms']:.1f} ms | {r['window_first_audio_ms']:.1f} ms | {r['speedup']:.2f}x |"
        )
    lines += [
        "",
        "One-frame steps pay per-call overhead on ~100 tiny convs: they buy first audio ~10x sooner, not "
        "throughput; at the window's own granularity (25 frames a step) streaming does no recomputation.",
        "",
        "Streaming output equals offline decoding (tests/test_streaming.py, <= 1e-5); the sliding window "
        "only approximates it (the decoder's receptive field is 28 frames of history, more than 15).",
        "",
        f"Streaming encoder: tokens for a frame come out once {enc.lookahead_samples} samples "
        f"({enc.lookahead_ms:.0f} ms) past the frame's end have arrived (the encoder is non-causal).",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "streaming-cpu.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
