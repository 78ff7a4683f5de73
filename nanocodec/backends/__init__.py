"""How the model core's modules run: chosen once per model, `model.set_backend(name)`.

- "reference": the core as written, NeMo's own NCW conv calls: bitwise NeMo on the same machine;
- "cpu": the fast CPU backend (`backends/cpu.py`), channels-last where `accuracy_gate` measured
  this machine's channels-last kernels as accurate as NCW for the shape;
- "auto": "cpu" for a model on the CPU, "reference" elsewhere.
"""
from __future__ import annotations

BACKENDS = ("auto", "cpu", "reference")


def resolve(name: str, device_type: str) -> str:
    if name == "auto":
        return "cpu" if device_type == "cpu" else "reference"
    return name
