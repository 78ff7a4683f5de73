"""A minimal TTS-style streaming server: several token streams decoded as slots of one decoder.

    python examples/streaming_server.py MODEL_FOLDER a.wav b.wav c.wav [--slots 4] [--no-realtime]

Each input is encoded to tokens, then played back as a client would produce them: one frame (80 ms
of audio) at a time, the clients joining at different moments and leaving when their tokens run
out. One asyncio loop ticks every 80 ms and decodes the next frame of every active stream in one
batched step (`stream_decoder(batch_size=N)`, `step(tokens, active=)`, `reset(slots=)`); a stream
that leaves frees its slot for the next one. Reports per-stream latency (frame in -> audio out) and
checks each stream's audio against offline decoding (within 1e-5).
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import numpy as np
import soundfile as sf
import soxr
import torch

from nanocodec import AudioCodecModel


class Stream:
    def __init__(self, name: str, tokens: torch.Tensor, join_tick: int):
        self.name, self.tokens, self.join_tick = name, tokens, join_tick  # tokens [1, G, F]
        self.sent = 0  # frames handed to the decoder
        self.audio: list[torch.Tensor] = []
        self.latency: list[float] = []

    @property
    def done(self) -> bool:
        return self.sent == self.tokens.shape[-1]


async def serve(model, streams: list[Stream], slots: int, realtime: bool) -> int:
    """Run until every stream is decoded; returns the number of batched steps."""
    frame_s = model.samples_per_frame / model.sample_rate
    dec = model.stream_decoder(batch_size=slots)
    in_slot: list[Stream | None] = [None] * slots
    waiting = sorted(streams, key=lambda s: s.join_tick)
    tick, steps, start = 0, 0, time.perf_counter()
    while waiting or any(in_slot):
        if realtime:
            await asyncio.sleep(max(0.0, start + tick * frame_s - time.perf_counter()))
        else:
            await asyncio.sleep(0)
        for i in range(slots):  # leave, then join: a freed slot is reset for its next stream
            if in_slot[i] is not None and in_slot[i].done:
                in_slot[i] = None
            if in_slot[i] is None and waiting and waiting[0].join_tick <= tick:
                in_slot[i] = waiting.pop(0)
                dec.reset(slots=[i])
        active = [s is not None for s in in_slot]
        if any(active):
            tokens = torch.zeros(slots, model.num_codebooks, 1, dtype=torch.long)
            for i, s in enumerate(in_slot):
                if s is not None:
                    tokens[i] = s.tokens[0, :, s.sent : s.sent + 1]
            arrived = time.perf_counter()
            audio = dec.step(tokens, active=active)
            done = time.perf_counter()
            for i, s in enumerate(in_slot):
                if s is not None:
                    s.audio.append(audio[i : i + 1])
                    s.latency.append(done - arrived)
                    s.sent += 1
            steps += 1
        tick += 1
    return steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--no-realtime", action="store_true", help="step as fast as possible (tests)")
    args = ap.parse_args(argv)
    model = AudioCodecModel.from_pretrained(args.model)
    streams = []
    for k, path in enumerate(args.inputs):
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        if sr != model.sample_rate:
            audio = soxr.resample(audio, sr, model.sample_rate, quality="VHQ").astype(np.float32)
        tokens, _ = model.encode(torch.from_numpy(audio))
        streams.append(Stream(path, tokens, join_tick=3 * k))  # clients arrive 240 ms apart
    steps = asyncio.run(serve(model, streams, args.slots, realtime=not args.no_realtime))
    print(f"{len(streams)} streams on {args.slots} slots: {steps} batched steps")
    for s in streams:
        streamed = torch.cat(s.audio, -1)
        offline = model.decode(s.tokens).audio
        err = float((streamed - offline).abs().max())
        ms = [1000 * t for t in s.latency]
        print(f"{s.name}: {s.tokens.shape[-1]} frames, step latency median {statistics.median(ms):.1f} ms, "
              f"max {max(ms):.1f} ms; vs offline max abs {err:.1e} ({'within' if err <= 1e-5 else 'NOT within'} 1e-5)")


if __name__ == "__main__":
    main()
