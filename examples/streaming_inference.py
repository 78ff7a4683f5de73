"""Encode a clip, then decode it frame by frame as a TTS server would, and write the wav.

    python examples/streaming_inference.py MODEL_FOLDER input.wav output.wav

Reports time to first audio and per-frame compute. The streamed audio matches offline decoding
within 1e-5 (contracts §5's bound; measured ~1.3e-6): the same convolutions summed over other
chunk boundaries round differently in float32, so it is not bit-identical.
"""
import sys
import time

import numpy as np
import soundfile as sf
import torch

from nanocodec import AudioCodecModel
from nanocodec.audio import resampled_length

STREAMED_VS_OFFLINE_TOL = 1e-5  # max abs difference (contracts §5, streaming vs offline decode)


def main(model_dir, wav_in, wav_out):
    model = AudioCodecModel.from_pretrained(model_dir)
    audio, sr = sf.read(wav_in, dtype="float32", always_2d=True)
    audio = torch.from_numpy(audio.mean(axis=1))  # [T, C] -> mono [T]
    tokens, tokens_len = model.encode(audio, sample_rate=sr)  # resampled to the model's rate if needed
    n = resampled_length(len(audio), sr, model.sample_rate)  # the input's length at the model's rate

    model.stream_decoder().step(tokens[:, :, :1])  # warm-up: first calls allocate
    decoder = model.stream_decoder(batch_size=1)
    chunks, step_times = [], []
    for i in range(tokens.shape[-1]):  # one 80 ms frame at a time, as tokens would arrive
        t = time.perf_counter()
        chunks.append(decoder.step(tokens[:, :, i : i + 1]))
        step_times.append(time.perf_counter() - t)
    streamed = torch.cat(chunks, dim=-1)[0, 0, :n]
    offline = model.decode(tokens, tokens_len).audio[0, 0, :n]
    frame_ms = 1000 * model.samples_per_frame / model.sample_rate
    print(f"time to first audio: {1000 * step_times[0]:.1f} ms (one frame = {frame_ms:.0f} ms of audio)")
    print(f"per-frame compute: median {1000 * np.median(step_times):.1f} ms, max {1000 * max(step_times):.1f} ms")
    diff = (streamed - offline).abs().max().item()
    print(f"streamed vs offline max abs difference: {diff:.2e} (within {STREAMED_VS_OFFLINE_TOL:g}: "
          f"{diff <= STREAMED_VS_OFFLINE_TOL})")
    sf.write(wav_out, streamed.numpy(), model.sample_rate)
    print(f"wrote {wav_out}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
