"""The precision policy (nanocodec/precision.py, contracts §10): the torch 2.13 fp32_precision flags it
sets in a scope, restores afterwards (also on an exception, also nested), and records. The flags can be
set and read on the CPU, so this runs everywhere (well under a second)."""
import pytest
import torch

from nanocodec import precision
from nanocodec.errors import InvalidInputError


def _legacy_flags_readable() -> bool:
    """torch 2.13 raises on reading the legacy allow_tf32 flags while the new settings disagree with
    them (a mix): readable again means the scope left nothing behind."""
    try:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32  # noqa: B018
        torch.get_float32_matmul_precision()
    except RuntimeError:
        return False
    return True


def test_float32_means_tf32_off_and_the_flags_come_back():
    before = precision.flags()
    with precision.precision_scope("cuda", torch.float32) as p:
        assert precision.flags() == {"cuda.matmul.fp32_precision": "ieee", "cudnn.conv.fp32_precision": "ieee",
                                     "cudnn.benchmark": False}
        assert not p.tf32 and precision.current() is p
    assert precision.flags() == before and precision.current() is None
    assert _legacy_flags_readable()


def test_opt_in_tf32_and_nesting():
    before = precision.flags()
    with precision.precision_scope("cuda", allow_tf32=True, cudnn_benchmark=True) as outer:
        assert outer.tf32 and precision.flags() == {"cuda.matmul.fp32_precision": "tf32",
                                                    "cudnn.conv.fp32_precision": "tf32", "cudnn.benchmark": True}
        with precision.precision_scope("cuda") as inherited:  # None: the enclosing choice
            assert inherited.allow_tf32 and precision.flags()["cudnn.conv.fp32_precision"] == "tf32"
        with precision.precision_scope("cuda", allow_tf32=False, cudnn_benchmark=False):
            assert precision.flags()["cuda.matmul.fp32_precision"] == "ieee"
            assert precision.flags()["cudnn.benchmark"] is False
        assert precision.flags()["cuda.matmul.fp32_precision"] == "tf32" and precision.current() is outer
    assert precision.flags() == before


def test_flags_restored_when_the_code_raises():
    before = precision.flags()
    with pytest.raises(KeyError):
        with precision.precision_scope("cuda", allow_tf32=True):
            raise KeyError("boom")
    assert precision.flags() == before and precision.current() is None


def test_the_record():
    rec = precision.settings("cpu", "bfloat16", backend="auto", threads=3)
    assert rec == {"dtype": "bfloat16", "tf32": False, "cudnn_benchmark": False, "backend": "cpu",
                   "device": "cpu", "torch": torch.__version__, "threads": 3}
    # TF32 exists on CUDA only: asked for on the CPU it is recorded as not in use
    assert precision.settings("cpu", allow_tf32=True)["tf32"] is False
    assert precision.settings("cuda:1", allow_tf32=True, backend="auto")["tf32"] is True
    assert precision.settings("cuda", backend="auto")["backend"] == "reference"
    assert precision.settings()["threads"] == torch.get_num_threads()


def test_bad_choices_are_named():
    with pytest.raises(InvalidInputError, match="dtype must be one of"):
        precision.settings(dtype="float64")
    with pytest.raises(InvalidInputError, match="backend must be one of"):
        precision.settings(backend="fast")
