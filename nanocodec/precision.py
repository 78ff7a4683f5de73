"""The one precision policy (contracts §10): which numeric settings a run uses, applied scoped.

    with precision_scope(model.device, model.dtype, allow_tf32=False, backend=model.backend) as policy:
        tokens, tokens_len = model.encode(audio)
    policy.record()   # {"dtype", "tf32", "cudnn_benchmark", "backend", "device", "torch", "threads"}

What it decides:
- dtype: the model's encoder/decoder dtype (the quantizer is always float32, contracts §1);
- TF32 for float32 convs and matmuls on CUDA: off unless the user opts in (`allow_tf32=True`, `--tf32`),
  because contracts §5 defines CUDA float32 parity with TF32 off. Set through torch 2.13's
  `torch.backends.cuda.matmul.fp32_precision` and `torch.backends.cudnn.conv.fp32_precision` only:
  torch 2.13 raises when those are mixed with the legacy `allow_tf32` flags, so nothing here touches
  (or reads) the legacy ones. torch's own default is TF32 *on* for cuDNN convs, hence the explicit "ieee";
- cuDNN autotuning (`torch.backends.cudnn.benchmark`): off by default (its algorithm choice may vary
  from run to run, and with it the float32 rounding);
- the backend (nanocodec/backends): recorded here, resolved as `from_pretrained` resolves it; the model
  applies it itself (`model.set_backend`).

Scoped: the flags are set on entry and restored on exit, never left process-global. They are
process-wide in torch, so scopes nest within one thread (an inner scope given `allow_tf32=None` keeps
the enclosing scope's choice) and concurrent threads must not open different policies. The flags can
be set and read without a GPU (tests/test_precision.py checks them on the CPU).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch

from .backends import BACKENDS, resolve
from .errors import InvalidInputError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_ON, _OFF = "tf32", "ieee"  # torch's fp32_precision values for TF32 allowed / full float32


@dataclass(frozen=True)
class Policy:
    """The settings of one scope (what `precision_scope` yields)."""

    device: str  # device type: cpu, cuda, mps
    dtype: torch.dtype
    allow_tf32: bool
    cudnn_benchmark: bool
    backend: str | None

    @property
    def tf32(self) -> bool:
        """TF32 actually in use for float32 work: only CUDA has it."""
        return self.allow_tf32 and self.device == "cuda"

    def record(self, threads: int | None = None) -> dict:
        """What made the output, for tokenize.json, token-file metadata and reports. `threads`:
        the torch threads of the process that ran the model (default: this process's now)."""
        return {
            "dtype": dtype_name(self.dtype),
            "tf32": self.tf32,
            "cudnn_benchmark": self.cudnn_benchmark and self.device == "cuda",
            "backend": self.backend,
            "device": self.device,
            "torch": torch.__version__,
            "threads": int(threads if threads is not None else torch.get_num_threads()),
        }


_active: list[Policy] = []  # the open scopes, innermost last (the flags they set are process-wide)


def dtype_of(dtype) -> torch.dtype:
    """A torch dtype from a torch dtype or its name ("float32", "torch.bfloat16")."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    name = str(dtype).replace("torch.", "")
    if name not in DTYPES:
        raise InvalidInputError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[name]


def dtype_name(dtype) -> str:
    return str(dtype_of(dtype)).replace("torch.", "")


def policy(device="cpu", dtype=torch.float32, *, allow_tf32: bool | None = None,
           cudnn_benchmark: bool | None = None, backend: str | None = None) -> Policy:
    """The settings a run with these choices uses (nothing is applied). `None` for `allow_tf32` or
    `cudnn_benchmark` keeps the enclosing scope's choice, else off."""
    outer = _active[-1] if _active else None
    device_type = torch.device(device).type
    if backend is not None:
        if backend not in BACKENDS:
            raise InvalidInputError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
        backend = resolve(backend, device_type)
    if allow_tf32 is None:
        allow_tf32 = outer.allow_tf32 if outer else False
    if cudnn_benchmark is None:
        cudnn_benchmark = outer.cudnn_benchmark if outer else False
    return Policy(device_type, dtype_of(dtype), bool(allow_tf32), bool(cudnn_benchmark), backend)


def flags() -> dict:
    """The torch settings the policy controls, as torch reports them now."""
    return {
        "cuda.matmul.fp32_precision": torch.backends.cuda.matmul.fp32_precision,
        "cudnn.conv.fp32_precision": torch.backends.cudnn.conv.fp32_precision,
        "cudnn.benchmark": torch.backends.cudnn.benchmark,
    }


def _apply(saved: dict) -> None:
    torch.backends.cuda.matmul.fp32_precision = saved["cuda.matmul.fp32_precision"]
    torch.backends.cudnn.conv.fp32_precision = saved["cudnn.conv.fp32_precision"]
    torch.backends.cudnn.benchmark = saved["cudnn.benchmark"]


@contextlib.contextmanager
def precision_scope(device="cpu", dtype=torch.float32, *, allow_tf32: bool | None = None,
                    cudnn_benchmark: bool | None = None, backend: str | None = None) -> Iterator[Policy]:
    """Run the enclosed code under the policy for these choices (see the module docstring); the
    flags are restored on exit, also when the code raises."""
    chosen = policy(device, dtype, allow_tf32=allow_tf32, cudnn_benchmark=cudnn_benchmark, backend=backend)
    saved = flags()
    mode = _ON if chosen.allow_tf32 else _OFF
    _apply({"cuda.matmul.fp32_precision": mode, "cudnn.conv.fp32_precision": mode,
            "cudnn.benchmark": chosen.cudnn_benchmark})
    _active.append(chosen)
    try:
        yield chosen
    finally:
        _active.pop()
        _apply(saved)


def current() -> Policy | None:
    """The innermost open scope's policy, or None outside every scope."""
    return _active[-1] if _active else None


def settings(device="cpu", dtype=torch.float32, *, allow_tf32: bool | None = None,
             cudnn_benchmark: bool | None = None, backend: str | None = None, threads: int | None = None) -> dict:
    """The record (dtype, tf32, cudnn_benchmark, backend, device, torch version, threads) of a run with
    these choices: `policy(...).record(threads)`."""
    return policy(device, dtype, allow_tf32=allow_tf32, cudnn_benchmark=cudnn_benchmark,
                  backend=backend).record(threads)
