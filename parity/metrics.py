"""Perceptual metrics: PESQ wide-band at 16 kHz after soxr resampling (contracts §5)."""
from __future__ import annotations

import numpy as np
import soxr

PESQ_RATE = 16000


def pesq_wb(reference: np.ndarray, degraded: np.ndarray, sample_rate: int) -> float | None:
    """PESQ (wide band) of `degraded` against `reference`; None where PESQ finds no speech."""
    from pesq import pesq
    from pesq.cypesq import PesqError

    ref = soxr.resample(np.asarray(reference, np.float64), sample_rate, PESQ_RATE, quality="HQ")
    deg = soxr.resample(np.asarray(degraded, np.float64), sample_rate, PESQ_RATE, quality="HQ")
    n = min(len(ref), len(deg))
    try:
        return float(pesq(PESQ_RATE, ref[:n], deg[:n], "wb"))
    except PesqError:
        return None
