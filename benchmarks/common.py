"""What the CPU benchmark (harness.py, report.py), the prepared CUDA run (cuda_device.py) and the streaming, ONNX
and Ray benchmarks share: the cases, the speech input, sample statistics, markdown tables and atomic report
files. Standard library at import (numpy inside the functions that need it): the GPU image has no soundfile,
the worker venvs no numpy guarantee, and this module is imported by all of them but the worker.
"""
from __future__ import annotations

import math
import os
import statistics
import struct
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SR, SPF = 22050, 1764  # the 0.6 kbps model every benchmark runs
FPS = SR / SPF  # 12.5
# the model's cost as issue 7 quotes it: torch.utils.flop_counter over NeMo's encode and decode at 2 and 4 frames
# (2 FLOP per multiply-add, intercept 0), recounted by every `make bench` until issue 17 (reports/bench-cpu-amd.json)
ISSUE_GFLOP_PER_S = {"encode": 27.95, "decode": 34.29}
SPEECH_CLIPS = ["speech_11s", "speech_4s", "speech_0p5s"]  # tests/fixtures/audio, tiled to any length
OPS = ("encode", "decode", "roundtrip")


@dataclass(frozen=True)
class Case:
    seconds: float
    batch: int

    @property
    def frames(self) -> int:
        return math.ceil(self.seconds * FPS - 1e-9)

    @property
    def samples(self) -> int:  # whole frames
        return self.frames * SPF

    @property
    def duration(self) -> float:  # audio seconds per item
        return self.samples / SR

    @property
    def audio_seconds(self) -> float:  # all items
        return self.duration * self.batch

    @property
    def key(self) -> str:
        return f"{self.seconds:g}s-b{self.batch}"

    @classmethod
    def parse(cls, key: str) -> "Case":  # "5s-b4" (a report's key) or "5x4" (the command line's)
        s, b = key.split("s-b") if "s-b" in key else key.split("x")
        return cls(float(s), int(b))


def read_wav(path) -> tuple:
    """Mono WAV, IEEE float32 or PCM16 (what tests/fixtures/audio holds) -> float32 [T], rate; scaled as
    libsndfile scales PCM16, so it reads what soundfile reads."""
    import numpy as np

    data = Path(path).read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    pos, fmt, samples = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == 0xFFFE:  # WAVE_FORMAT_EXTENSIBLE: the real tag leads the sub-format GUID
                tag = struct.unpack("<H", body[24:26])[0]
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            samples = body
        pos += 8 + size + (size & 1)
    if fmt is None or samples is None:
        raise ValueError(f"{path}: no fmt or data chunk")
    tag, channels, rate, bits = fmt
    if channels != 1:
        raise ValueError(f"{path}: {channels} channels; mono expected")
    if (tag, bits) == (3, 32):
        return np.frombuffer(samples, dtype="<f4").astype(np.float32), rate
    if (tag, bits) == (1, 16):
        return np.frombuffer(samples, dtype="<i2").astype(np.float32) / 32768.0, rate
    raise ValueError(f"{path}: WAV format tag {tag} with {bits} bits is not supported here")


_POOL = []


def speech(num_samples: int, offset_s: float = 0.0, gain: float = 0.9):
    """The committed speech clips tiled to length, starting offset_s into them (float32 [T])."""
    import numpy as np

    if not _POOL:
        _POOL.append(np.concatenate([read_wav(REPO / "tests" / "fixtures" / "audio" / f"{n}.wav")[0] for n in SPEECH_CLIPS]))
    pool = _POOL[0]
    start = int(offset_s * SR) % len(pool)
    return (pool[(start + np.arange(num_samples)) % len(pool)] * gain).astype(np.float32)


def batch_items(case: Case) -> list:
    """A case's input items: the same speech, item i starting 0.77 s further in, at slightly lower gains."""
    return [speech(case.samples, offset_s=0.77 * i, gain=0.9 - 0.03 * (i % 7)) for i in range(case.batch)]


def stats(samples: list) -> dict | None:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)} if samples else None


def loadavg() -> list:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def loadavg_text(la) -> str:
    """1/5/15-min load averages as the reports print them."""
    return " / ".join(f"{v:.2f}" for v in la) if la else "n/a"


def fmt(x, spec: str = ".2f", none: str = "—") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return none
    return "inf" if isinstance(x, float) and math.isinf(x) else format(x, spec)


def table(header: list, rows: list) -> list[str]:
    """A markdown table; rows shorter than the header are padded with empty cells."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join([str(c) for c in r] + [""] * (len(header) - len(r))) + " |" for r in rows]


def write_atomic(path: Path, text: str) -> None:
    """Through a temporary sibling and a rename: a run killed mid-write leaves the last complete file."""
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
