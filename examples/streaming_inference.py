"""Encode a clip, then decode it frame by frame as a TTS server would, and write the wav.

    python examples/streaming_inference.py MODEL_FOLDER input.wav output.wav

Reports time to first audio and per-frame compute. The streamed audio equals offline decoding.
"""
import sys
import time

import numpy as np
import soundfile as sf
import soxr
import torch

from nanocodec import AudioCodecModel


def main(model_dir, wav_in, wav_out):
    model = AudioCodecModel.from_pretrained(model_dir)
    audio, sr = sf.read(wav_in, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != model.sample_rate:
        audio = soxr.resample(audio, sr, model.sample_rate, quality="VHQ").astype(np.float32)
    tokens, tokens_len = model.encode(torch.from_numpy(audio))

    model.stream_decoder().step(tokens[:, :, :1])  # warm-up: first calls allocate
    decoder = model.stream_decoder(batch_size=1)
    chunks, step_times = [], []
    for i in range(tokens.shape[-1]):  # one 80 ms frame at a time, as tokens would arrive
        t = time.perf_counter()
        chunks.append(decoder.step(tokens[:, :, i : i + 1]))
        step_times.append(time.perf_counter() - t)
    streamed = torch.cat(chunks, dim=-1)[0, 0, : len(audio)]
    offline = model.decode(tokens, tokens_len).audio[0, 0, : len(audio)]
    frame_ms = 1000 * model.samples_per_frame / model.sample_rate
    print(f"time to first audio: {1000 * step_times[0]:.1f} ms (one frame = {frame_ms:.0f} ms of audio)")
    print(f"per-frame compute: median {1000 * np.median(step_times):.1f} ms, max {1000 * max(step_times):.1f} ms")
    print(f"streamed vs offline max abs difference: {(streamed - offline).abs().max().item():.2e}")
    sf.write(wav_out, streamed.numpy(), model.sample_rate)
    print(f"wrote {wav_out}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
