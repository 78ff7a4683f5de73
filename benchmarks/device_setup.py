"""What benchmarks/cuda_device.py runs on: the machine, and the two models with equal weights.

`build_models` builds NeMo's own modules (benchmarks/nemo_from_wheel.py) from a fixed seed and makes them
informative exactly as `make fixtures` does (parity/oracle/build_fixtures.py: same seeds, same calibration),
then maps them to our layout with the converter's own key map and loads them with `from_pretrained`. With
the full-size profile these are the weights of `make fixtures FULL=1` (cache/fixtures-full/nano0p6_full.nemo,
those of the CPU benchmark); with `--tiny` those of the committed tests/fixtures/models/nano0p6_replicate.nemo.
"""
from __future__ import annotations

import hashlib
import os
import platform
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from common import REPO, read_wav

ORACLE_DIR = REPO / "parity" / "oracle"
FULL_PRESET = "nanocodec-22khz-0.6kbps-12.5fps"
# the .nemo `make fixtures` wrote from the same seed and recipe, and the sha256 (state_sha256) of the state built
# here on the CPU that wrote it: cache/ is git-ignored and not carried to the GPU machine, where the sha256 stands in
FIXTURES = {"nano0p6_replicate": (REPO / "tests" / "fixtures" / "models" / "nano0p6_replicate.nemo",
                                  "b6762cad4886700273d4e3ef8e87efb431adafcde141c9edce532f21cc876a48"),
            "nano0p6_full": (REPO / "cache" / "fixtures-full" / "nano0p6_full.nemo",
                             "ceddb91435bab1605abedc307be48cbba07dc371dbffe7a172b8bd7ced888724")}
# the calibration runs float32 convolutions, so weights rebuilt on another CPU may differ in the last bits
# (relative to each tensor's max; measured 9.4e-7-scale conv differences between an Intel Xeon and an AMD EPYC)
WEIGHTS_CPU_REL_TOL = 1e-5


def card_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100', 'NVIDIA H200' -> 'h200', 'cpu' -> 'cpu'."""
    if m := re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Z]?)\b", name):
        return m.group(1).lower()
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def machine_info(device: torch.device) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "card": "cpu", "cuda": None, "cudnn": None}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(card=torch.cuda.get_device_name(device), capability=f"{p.major}.{p.minor}", sm_count=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return {**info, "slug": card_slug(info["card"])}


def import_build_fixtures():
    """parity/oracle/build_fixtures.py (the fixture builder's seeds, configs and calibration). It needs no NeMo at
    import; nemo_oracle, which it imports, needs soundfile (not on the GPU image) only for `read`, shimmed if absent."""
    if str(ORACLE_DIR) not in sys.path:
        sys.path.insert(0, str(ORACLE_DIR))
    try:
        import soundfile  # noqa: F401
    except (ImportError, OSError):  # not installed, or installed without its libsndfile
        def read(file, dtype="float32", **_):  # nemo_oracle reads mono WAVs with always_2d=False
            x, rate = read_wav(file)
            return x.astype(dtype), rate

        sys.modules["soundfile"] = types.SimpleNamespace(read=read)
    import build_fixtures

    return build_fixtures


def state_sha256(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update((t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return h.hexdigest()


@dataclass
class Models:
    name: str  # build_fixtures model name
    seed: int
    nemo_cfg: dict
    folder: Path  # our converted weights (save_pretrained)
    nemo_state: dict
    mods: object  # nemo_from_wheel.load()'s namespace
    weights_sha256: str
    notes: list = field(default_factory=list)
    cache: dict = field(default_factory=dict)

    def nemo(self, device, dtype=torch.float32):
        """NeMo's modules with the seeded weights, on device, cast to dtype (what model.to() does)."""
        from nemo_from_wheel import NemoCodec

        if (key := ("nemo", str(device), dtype)) not in self.cache:
            m = NemoCodec(self.nemo_cfg, self.mods)
            m.load_state_dict(self.nemo_state, strict=True)
            self.cache[key] = m.to(device=device, dtype=dtype).eval()
        return self.cache[key]

    def ours(self, device, dtype=torch.float32):
        from nanocodec import AudioCodecModel

        if (key := ("ours", str(device), dtype)) not in self.cache:
            self.cache[key] = AudioCodecModel.from_pretrained(self.folder, device=device, dtype=dtype)
        return self.cache[key]


def fixture_check(model_name: str, state: dict, sha: str) -> str:
    """Whether the weights built here are those of `make fixtures`: bitwise (the pinned sha256), else, where the
    fixture file is in this checkout, within the float32 rounding of a calibration on another CPU."""
    path, pinned = FIXTURES[model_name]
    rel_path = path.relative_to(REPO)
    if sha == pinned:
        return f"weights bitwise equal to {rel_path}"
    if not path.exists():
        return f"weights not bitwise equal to {rel_path} (sha256 {pinned[:16]}…: calibrated on another CPU?)"
    from nanocodec.convert.archive import read_nemo

    ref = read_nemo(path).state_dict
    if not all(k in ref and ref[k].shape == v.shape for k, v in state.items()):
        return f"weights DIFFER from {rel_path} (other tensors or shapes)"
    rel = max(float((v.double() - ref[k].double()).abs().max() / ref[k].double().abs().max().clamp_min(1e-30))
              for k, v in state.items() if v.is_floating_point())
    verdict = f"equal within {rel:.1e} relative to" if rel <= WEIGHTS_CPU_REL_TOL else f"DIFFER ({rel:.1e} relative) from"
    return f"weights {verdict} {rel_path} (built on another CPU)"


def build_models(model_name: str, nemo_source, work: Path, log=print) -> Models:
    import nemo_from_wheel
    from nanocodec import PRESETS, AudioCodecModel
    from nanocodec.convert.keymap import map_state_dict
    from nanocodec.convert.nemo_config import config_from_yaml

    bf = import_build_fixtures()
    mods = nemo_from_wheel.load(nemo_source)
    seed, cfg = bf.SEEDS[model_name], bf.model_config({**bf.MODELS, **bf.FULL}[model_name])
    log(f"NeMo {mods.version} modules from {mods.source} ({mods.einops}); building {model_name}, seed {seed}")
    # NeMo's AudioCodecModel builds encoder, quantizer, decoder in this order after manual_seed; NemoCodec does
    # the same, so the draws (and then the calibration) are the fixture builder's
    torch.manual_seed(seed)
    nemo = nemo_from_wheel.NemoCodec(cfg, mods)
    bf.make_informative(nemo, seed)
    state = {k: v.detach().clone() for k, v in nemo.state_dict().items()}
    config, notes = config_from_yaml(cfg)
    if model_name == "nano0p6_full":
        same = config.to_json() == PRESETS[FULL_PRESET].config().to_json()
        notes.append(f"architecture {'equals' if same else 'DIFFERS from'} nanocodec preset {FULL_PRESET}")
    ours = AudioCodecModel(config)
    ours.load_state_dict(map_state_dict(dict(state), config).state_dict, strict=True)
    folder = ours.save_pretrained(work / f"ours-{model_name}", overwrite=True)
    sha = state_sha256(state)
    models = Models(model_name, seed, cfg, Path(folder), state, mods, sha, notes + [fixture_check(model_name, state, sha)])
    models.cache[("nemo", "cpu", torch.float32)] = nemo.eval()
    return models
