#!/usr/bin/env bash
# Test audio for the fixtures: espeak-ng speech (converted by sox, dither off) and synthetic
# signals from numpy (seeded). 22050 Hz mono, 32-bit float WAV so sample values are exact.
# Installs nothing. Usage: make_test_audio.sh OUT_DIR PYTHON
set -euo pipefail
OUT=${1:-tests/fixtures/audio}
PY=${2:-python3}
command -v espeak-ng >/dev/null || { echo "espeak-ng is required (apt-get install espeak-ng)" >&2; exit 2; }
command -v sox >/dev/null || { echo "sox is required (apt-get install sox)" >&2; exit 2; }
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

speak() {  # name voice text
  espeak-ng -v "$2" -s 160 -w "$TMP/$1.raw.wav" "$3"
  # -D: no dither; float output; peak normalised to -1 dBFS
  sox -D "$TMP/$1.raw.wav" -r 22050 -c 1 -e floating-point -b 32 "$TMP/$1.wav" gain -n -1
}
speak short en "Hello."
speak medium en "The quick brown fox jumps over the lazy dog, twice."
speak long en-us "Every fixture is built by NeMo itself, with seeded weights, and the port must reproduce its tokens, latents and audio, frame by frame, on any machine."

"$PY" - "$TMP" "$OUT" <<'PYEOF'
import struct
import sys

import numpy as np
import soundfile as sf

tmp, out = sys.argv[1], sys.argv[2]
SR = 22050

def load(name):
    x, sr = sf.read(f"{tmp}/{name}.wav", dtype="float32")
    assert sr == SR and x.ndim == 1, (sr, x.shape)
    return x

def fit(x, n):
    """Trim or zero-pad to exactly n samples."""
    y = np.zeros(n, np.float32)
    y[: min(n, len(x))] = x[:n]
    return y

def write(name, x):
    """32-bit float WAV written by hand: libsndfile adds a PEAK chunk with a timestamp, which
    would make the bytes differ between runs. fmt (WAVE_FORMAT_IEEE_FLOAT, cbSize 0) + fact + data."""
    x = np.asarray(x, np.float32)
    assert np.all(np.abs(x) <= 1.0), name
    data = x.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHHH", 3, 1, SR, SR * 4, 4, 32, 0)
    fact = struct.pack("<I", len(x))
    body = (b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<I", 4) + fact
            + b"data" + struct.pack("<I", len(data)) + data)
    with open(f"{out}/{name}.wav", "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)
    y, sr = sf.read(f"{out}/{name}.wav", dtype="float32")
    assert sr == SR and np.array_equal(y, x) and sf.info(f"{out}/{name}.wav").subtype == "FLOAT", name

speech_0p5 = fit(load("short"), SR // 2)          # 11025 samples (6.25 frames of 1764)
speech_4 = fit(load("medium"), 4 * SR)            # 88200 samples (50 frames exactly)
speech_11 = fit(load("long"), 11 * SR)            # 242550 samples (137.5 frames)
write("speech_0p5s", speech_0p5)
write("speech_4s", speech_4)
write("speech_11s", speech_11)
write("silence", np.zeros(SR, np.float32))

rng = np.random.default_rng(20250101)
write("white_noise", rng.uniform(-1.0, 1.0, SR) * 0.3)  # uniform white noise, peak amplitude 0.3

t = np.arange(2 * SR, dtype=np.float64) / SR
f0, f1, dur = 50.0, 10000.0, 2.0                   # exponential sweep 50 Hz -> 10 kHz
k = np.log(f1 / f0)
write("sine_sweep", 0.5 * np.sin(2 * np.pi * f0 * dur / k * (np.exp(t / dur * k) - 1.0)))

t = np.arange(SR, dtype=np.float64) / SR
sq = np.zeros_like(t)
for h in range(1, 100, 2):                         # band-limited 220 Hz square, amplitude 1.5
    if h * 220 < SR / 2:
        sq += np.sin(2 * np.pi * 220 * h * t) / h
write("clipped_square", np.clip(1.5 * (4 / np.pi) * sq, -1.0, 1.0))

# edge lengths cut from loud speech (start where the 4 s clip is loud, so they are not silent)
env = np.convolve(np.abs(speech_4), np.ones(1765) / 1765, mode="valid")
start = int(np.argmax(env))
for n in (1, 1763, 1764, 1765):
    seg = speech_4[start : start + n]
    if n == 1:
        seg = speech_4[start + int(np.argmax(np.abs(speech_4[start : start + 1765])))][None]
    assert len(seg) == n and np.abs(seg).max() > 0.05
    write(f"len_{n}", seg)
PYEOF
echo "test audio written to $OUT"
