"""examples/device_examples.py on the CPU with the fixture model (the suite has no GPU): the device pick,
the check against the CPU float32 reference, and the refusal of a device that is not there.
Costs ~15 s (three tiny-model runs of a 2 s clip)."""
import runpy
import sys

import pytest
import torch

from conftest import ROOT

EXAMPLE = str(ROOT / "examples" / "device_examples.py")

pytestmark = pytest.mark.usefixtures("one_thread")


def run_example(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["device_examples.py", *map(str, args)])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(EXAMPLE, run_name="__main__")
    return done.value.code, capsys.readouterr().out


def test_cpu_float32_is_the_reference_itself(base_folder, monkeypatch, capsys):
    code, out = run_example(monkeypatch, capsys, base_folder, "--device", "cpu")
    assert code == 0, out
    assert "device cpu" in out and "dtype float32" in out and "TF32 off" in out
    # the same path as the reference in the same process: every token equal, audio within 1e-5
    assert "tokens: 100/100 equal" in out and "within 1e-05: True" in out


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cpu_half_precision_is_reported(base_folder, monkeypatch, capsys, dtype):
    code, out = run_example(monkeypatch, capsys, base_folder, "--device", "cpu", "--dtype", dtype)
    assert code == 0, out
    assert f"dtype {dtype}" in out and "half precision: reported" in out and "/100 equal" in out


def test_auto_and_missing_devices(base_folder, monkeypatch, capsys):
    if not torch.cuda.is_available():
        code, _ = run_example(monkeypatch, capsys, base_folder, "--device", "cuda")
        assert "torch sees no CUDA GPU" in str(code)
    if not torch.backends.mps.is_available():
        code, _ = run_example(monkeypatch, capsys, base_folder, "--device", "mps")
        assert "MPS is not available" in str(code)
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        code, out = run_example(monkeypatch, capsys, base_folder)  # --device auto
        assert code == 0 and "device cpu" in out
