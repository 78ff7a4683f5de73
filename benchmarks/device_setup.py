"""What benchmarks/cuda_device.py runs on: the machine, the audio, and the two models with equal weights.

Kept apart from the measuring so that each piece stays small:
- `machine_info`: card, driver, torch / CUDA / cuDNN versions;
- `read_wav` + `speech`: the committed speech clips without soundfile (the GPU image has none);
- `build_models`: NeMo's own modules (benchmarks/nemo_from_wheel.py) built from a fixed seed and made
  informative exactly as `make fixtures` does (parity/oracle/build_fixtures.py: same seeds, same
  calibration), then mapped to our layout with the converter's own key map and loaded with
  `from_pretrained`. With the full-size profile these are the weights of `make fixtures FULL=1`
  (cache/fixtures-full/nano0p6_full.nemo), i.e. those of the CPU benchmark; with `--tiny` those of
  the committed fixture tests/fixtures/models/nano0p6_replicate.nemo.
"""
from __future__ import annotations

import hashlib
import platform
import re
import struct
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / "benchmarks"
for _p in (str(HERE), str(REPO)):  # see benchmarks/cuda_device.py: this folder's modules as top-level names
    if _p not in sys.path:
        sys.path.insert(0, _p)
ORACLE_DIR = REPO / "parity" / "oracle"
AUDIO_DIR = REPO / "tests" / "fixtures" / "audio"
SPEECH_CLIPS = ["speech_11s", "speech_4s", "speech_0p5s"]  # as benchmarks/harness.py tiles them
FULL_PRESET = "nanocodec-22khz-0.6kbps-12.5fps"
# the .nemo `make fixtures` wrote from the same seed and recipe, where this checkout has it (cache/ is
# git-ignored and not carried to the GPU machine: there the sha256 below stands in for it)
FIXTURE_NEMO = {"nano0p6_replicate": REPO / "tests" / "fixtures" / "models" / "nano0p6_replicate.nemo",
                "nano0p6_full": REPO / "cache" / "fixtures-full" / "nano0p6_full.nemo"}
# state_sha256 of those fixtures' NeMo state dicts (their inference tensors), computed on the CPU
# that built them; the calibration runs float32 convolutions, so another CPU may differ in the last bits
# weights rebuilt here from the same seed may differ from those in the last bits (relative to each
# tensor's max; measured 9.4e-7-scale conv differences between an Intel Xeon and an AMD EPYC)
WEIGHTS_CPU_REL_TOL = 1e-5
FIXTURE_SHA256 = {"nano0p6_replicate": "b6762cad4886700273d4e3ef8e87efb431adafcde141c9edce532f21cc876a48",
                  "nano0p6_full": "ceddb91435bab1605abedc307be48cbba07dc371dbffe7a172b8bd7ced888724"}


# ----------------------------------------------------------------------------------------------
# machine
# ----------------------------------------------------------------------------------------------
def card_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100', 'NVIDIA H200' -> 'h200', 'cpu' -> 'cpu'."""
    m = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Z]?)\b", name)
    if m:
        return m.group(1).lower()
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def _nvidia_smi() -> dict:
    q = "name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit,pstate"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=15).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return {}
    if not out:
        return {}
    return dict(zip(q.split(","), (v.strip() for v in out[0].split(","))))


def machine_info(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "cpu_count": __import__("os").cpu_count(),
            "torch_threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update({
            "card": torch.cuda.get_device_name(device), "capability": f"{p.major}.{p.minor}",
            "sm_count": p.multi_processor_count, "memory_gib": round(p.total_memory / 2**30, 1),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(), "nvidia_smi": _nvidia_smi(),
        })
    else:
        info.update({"card": "cpu", "cuda": None, "cudnn": None})
    info["slug"] = card_slug(info["card"])
    return info


# ----------------------------------------------------------------------------------------------
# audio without soundfile
# ----------------------------------------------------------------------------------------------
def read_wav(path) -> tuple[np.ndarray, int]:
    """Mono WAV, IEEE float32 or PCM16 (what tests/fixtures/audio holds) -> float32 [T], rate."""
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
        x = np.frombuffer(samples, dtype="<f4")
    elif (tag, bits) == (1, 16):
        x = np.frombuffer(samples, dtype="<i2").astype(np.float32) / 32768.0  # libsndfile's scaling
    else:
        raise ValueError(f"{path}: WAV format tag {tag} with {bits} bits is not supported here")
    return np.array(x, dtype=np.float32), rate  # a writable copy (frombuffer views are read-only)


def soundfile_shim() -> types.ModuleType:
    """A `soundfile` with the one call parity/oracle/nemo_oracle.py makes (`read`), for machines
    without soundfile: that module imports it at top level, and its `load_audio` feeds the
    calibration clip to build_fixtures.make_informative."""
    mod = types.ModuleType("soundfile")

    def read(file, dtype="float32", always_2d=False, **_):
        x, rate = read_wav(file)
        x = x.astype(dtype)
        return (x[:, None] if always_2d else x), rate

    mod.read = read
    mod.__nanocodec_shim__ = True
    return mod


_POOL: np.ndarray | None = None


def speech(num_samples: int, offset_s: float = 0.0, gain: float = 0.9) -> np.ndarray:
    """Committed speech tiled to length, starting offset_s into the pool (float32 [T])."""
    global _POOL
    if _POOL is None:
        _POOL = np.concatenate([read_wav(AUDIO_DIR / f"{n}.wav")[0] for n in SPEECH_CLIPS])
    start = int(offset_s * 22050) % len(_POOL)
    return (_POOL[(start + np.arange(num_samples)) % len(_POOL)] * gain).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------
def import_build_fixtures():
    """parity/oracle/build_fixtures.py (the fixture builder's seeds, configs and calibration). It
    needs no NeMo at import; nemo_oracle, which it imports, needs soundfile: shimmed if absent."""
    if str(ORACLE_DIR) not in sys.path:
        sys.path.insert(0, str(ORACLE_DIR))
    try:
        import soundfile  # noqa: F401
    except (ImportError, OSError):  # not installed, or installed without its libsndfile
        sys.modules["soundfile"] = soundfile_shim()
    import build_fixtures

    return build_fixtures


def state_sha256(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()


@dataclass
class Models:
    name: str  # build_fixtures model name
    seed: int
    nemo_cfg: dict
    config: object  # NanoCodecConfig
    folder: Path  # our converted weights (save_pretrained)
    nemo_state: dict
    mods: object  # nemo_from_wheel.NemoModules
    weights_sha256: str
    notes: list = field(default_factory=list)
    cache: dict = field(default_factory=dict)

    def nemo(self, device, dtype=torch.float32):
        """NeMo's modules with the seeded weights, on device, cast to dtype (what model.to() does)."""
        from nemo_from_wheel import NemoCodec

        key = ("nemo", str(device), dtype)
        if key not in self.cache:
            m = NemoCodec(self.nemo_cfg, self.mods)
            m.load_state_dict(self.nemo_state, strict=True)
            self.cache[key] = m.to(device=device, dtype=dtype).eval()
        return self.cache[key]

    def ours(self, device, dtype=torch.float32):
        from nanocodec import AudioCodecModel

        key = ("ours", str(device), dtype)
        if key not in self.cache:
            self.cache[key] = AudioCodecModel.from_pretrained(self.folder, device=device, dtype=dtype)
        return self.cache[key]


def fixture_check(model_name: str, state: dict, sha: str) -> str:
    """Whether the weights built here are those of `make fixtures` (bitwise)."""
    path = FIXTURE_NEMO.get(model_name)
    if path is not None and path.exists():
        from nanocodec.convert.archive import read_nemo

        ref = read_nemo(path).state_dict
        if not all(k in ref and ref[k].shape == v.shape for k, v in state.items()):
            return f"weights DIFFER from {path.relative_to(REPO)} (other tensors or shapes)"
        if all(torch.equal(v, ref[k]) for k, v in state.items()):
            return f"weights bitwise equal to {path.relative_to(REPO)}"
        rel = max(float((v.double() - ref[k].double()).abs().max() / ref[k].double().abs().max().clamp_min(1e-30))
                  for k, v in state.items() if v.is_floating_point())
        # the calibration's float32 convs sum in this CPU's order: a few ulps, not another recipe
        verdict = f"equal within {rel:.1e} relative to" if rel <= WEIGHTS_CPU_REL_TOL else f"DIFFER ({rel:.1e} relative) from"
        return f"weights {verdict} {path.relative_to(REPO)} (built on another CPU)"
    if model_name in FIXTURE_SHA256:
        same = FIXTURE_SHA256[model_name] == sha
        return (f"weights {'bitwise equal to' if same else 'not bitwise equal to (calibrated on another CPU)'} "
                f"those of {FIXTURE_NEMO[model_name].relative_to(REPO)} (sha256 {FIXTURE_SHA256[model_name][:16]}…)")
    return "no fixture to compare the weights with"


def build_models(model_name: str, nemo_source, work: Path, log=print) -> Models:
    import nemo_from_wheel
    from nemo_from_wheel import NemoCodec
    from nanocodec.convert.keymap import map_state_dict
    from nanocodec.convert.nemo_config import config_from_yaml
    from nanocodec import PRESETS, AudioCodecModel

    bf = import_build_fixtures()
    mods = nemo_from_wheel.load(nemo_source)
    arch = {**bf.MODELS, **bf.FULL}[model_name]
    seed = bf.SEEDS[model_name]
    cfg = bf.model_config(arch)
    log(f"NeMo {mods.version} modules from {mods.source} ({mods.einops}); building {model_name}, seed {seed}")
    # NeMo's AudioCodecModel builds encoder, quantizer, decoder in this order after manual_seed:
    # NemoCodec does the same, so the draws (and then the calibration) are the fixture builder's
    torch.manual_seed(seed)
    nemo = NemoCodec(cfg, mods)
    bf.make_informative(nemo, seed)
    state = {k: v.detach().clone() for k, v in nemo.state_dict().items()}
    config, notes = config_from_yaml(cfg)
    if model_name == "nano0p6_full":
        same = config.to_json() == PRESETS[FULL_PRESET].config().to_json()
        notes.append(f"architecture {'equals' if same else 'DIFFERS from'} nanocodec preset {FULL_PRESET}")
    mapping = map_state_dict(dict(state), config)
    ours = AudioCodecModel(config)
    ours.load_state_dict(mapping.state_dict, strict=True)
    folder = ours.save_pretrained(work / f"ours-{model_name}", overwrite=True)
    models = Models(model_name, seed, cfg, config, Path(folder), state, mods, state_sha256(state), notes)
    models.notes.append(fixture_check(model_name, state, models.weights_sha256))
    models.cache[("nemo", "cpu", torch.float32)] = nemo.eval()
    return models
