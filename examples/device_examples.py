"""Run NanoCodec on the CPU, a CUDA GPU or Apple's MPS, and check the result against the CPU.

    python examples/device_examples.py MODEL [input.wav] [--device auto|cpu|cuda|cuda:N|mps]
                                       [--dtype float32|bfloat16|float16] [--tf32]

`--device auto` takes CUDA if torch sees a GPU, else MPS, else the CPU. The clip (default: 2 s of a
synthetic vowel) is encoded and decoded on that device and compared with the CPU float32 result, the
reference for other devices and dtypes (contracts §5): tokens identical except rare FSQ boundary flips,
decoded audio within 1e-5 in float32; half precision is reported, not gated.

What each device supports, and what was tested:

| device | dtypes | how it runs | tested |
|---|---|---|---|
| cpu  | float32 (default, NeMo parity); bfloat16 (about 2x faster with AMX / AVX-512 bf16, may flip boundary tokens); float16 runs (speed not measured) | backend "cpu": channels-last convs where this CPU's kernels are as accurate as NeMo's, long inputs in chunks | every test and report (Intel Xeon, AMD EPYC); this example in the test suite (float32, bfloat16, float16) |
| cuda | float32 with TF32 off (NeMo parity; `--tf32` / `model.allow_tf32 = True` opts in), bfloat16, float16 | backend "reference": NeMo's own NCW conv calls on cuDNN; whole inputs | prepared (benchmarks/cuda_device.py, benchmarks/DEVICE.md); not run on a GPU by this project yet |
| mps  | float32 (float16 may work; bfloat16 needs a recent macOS) | backend "reference" | not tested (no Apple machine) |

The quantizer (FSQ) always runs in float32, as in NeMo; `stream_decoder()` and `stream_encoder()` run on
any of them (they use the same modules).
"""
import argparse
import math
import sys

import torch

from nanocodec import AudioCodecModel, audio
from nanocodec.precision import DTYPES

AUDIO_TOL = 1e-5  # float32 on another device vs CPU float32, max abs (contracts §5)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"--device {name}: torch sees no CUDA GPU here (a CPU-only torch build, or no driver)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        sys.exit(f"--device {name}: MPS is not available (it needs Apple silicon and a macOS torch build)")
    return device


def vowel(seconds: float, rate: int) -> torch.Tensor:
    """A synthetic vowel (harmonics of 140 Hz under a formant-ish envelope): speech-like, no file needed."""
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    x = sum(math.exp(-((k * 140 - 700) / 900) ** 2) * torch.sin(2 * math.pi * k * 140 * t) for k in range(1, 30))
    return (0.3 * x / x.abs().max()).float()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="a converted model folder or hub repo id (anything from_pretrained takes)")
    ap.add_argument("input", nargs="?", help="an audio file (default: a 2 s synthetic vowel)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32", choices=list(DTYPES))
    ap.add_argument("--tf32", action="store_true", help="allow TF32 for float32 on CUDA (faster, not NeMo-exact)")
    args = ap.parse_args(argv)
    device, dtype = pick_device(args.device), DTYPES[args.dtype]

    reference = AudioCodecModel.from_pretrained(args.model)  # CPU float32: the reference
    if args.input:
        x, _ = audio.load(args.input, sample_rate=reference.sample_rate)
    else:
        x = vowel(2.0, reference.sample_rate)
    model = AudioCodecModel.from_pretrained(args.model, device=device, dtype=dtype)
    model.allow_tf32 = args.tf32 or None  # None: TF32 off unless an enclosing precision scope allows it
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else device.type}), "
          f"dtype {args.dtype}, backend {model.backend}, TF32 {'allowed' if args.tf32 else 'off'}")

    want, want_len = reference.encode(x)
    got, got_len = model.encode(x.to(device))
    got, got_len = got.cpu(), got_len.cpu()
    same = int((got == want).sum())
    print(f"tokens: {same}/{want.numel()} equal to the CPU float32 tokens ({int(want_len[0])} frames)")
    ref_audio = reference.decode(want, want_len).audio
    dec_audio = model.decode(want.to(device), want_len.to(device)).audio.float().cpu()  # the same tokens
    err = (dec_audio - ref_audio).abs().max().item()
    noise = (dec_audio - ref_audio).pow(2).sum().item()
    snr = 10 * math.log10(ref_audio.pow(2).sum().item() / noise) if noise else math.inf
    verdict = f"within {AUDIO_TOL:g}: {err <= AUDIO_TOL}" if dtype == torch.float32 else "half precision: reported"
    print(f"decoded audio vs CPU float32: max abs {err:.2e}, SNR {snr:.1f} dB ({verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
