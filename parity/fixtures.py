"""The committed NeMo fixtures (tests/fixtures, made by `make fixtures`): models, inputs, references.

A model case is a committed `.nemo` or one derived from the base at run time (parity/oracle/derive.py);
derived variants whose outputs NeMo asserted identical to the base are checked against the base's
references.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


# The PyPI port's published form: safetensors holding NeMo's encoder and decoder tensors under NeMo's
# names (parametrized weight norm), no architecture: converted with `--preset`. Every committed model
# is also checked in that form, on these inputs (references: the model's own NeMo recordings).
REEXPORT = "reexport"
REEXPORT_INPUTS = ("speech_0p5s", "white_noise")


def write_reexport(nemo: Path, folder: Path) -> Path:
    from nanocodec.convert.archive import read_nemo
    from nanocodec.fileio import tensorfile

    state = read_nemo(nemo).state_dict
    keep = {k: v for k, v in state.items() if k.startswith(("audio_encoder.", "audio_decoder."))}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(tensorfile.to_bytes(keep))
    return folder


@dataclass(frozen=True)
class ModelCase:
    name: str
    nemo: Path | None  # committed file, or None when derived
    derive: str | None  # derived variant suffix (parity/oracle/derive.py)
    refs: str  # folder under refs/ holding NeMo's outputs for this model
    inputs: tuple[str, ...]
    # inputs NeMo raises on (reflect padding of too short inputs): (input, what NeMo raised); we must refuse them too
    refused: tuple[tuple[str, str], ...] = ()


def manifest(fixtures: Path = FIXTURES) -> dict:
    return json.loads((fixtures / "manifest.json").read_text())


def model_cases(fixtures: Path = FIXTURES) -> list[ModelCase]:
    m = manifest(fixtures)

    def refused(name):
        return tuple((c["input"], f"{c['raised']}: {c['message']}") for c in m.get("crashes", {}).get(name, [])
                     if c.get("raised"))

    cases = [
        ModelCase(name, fixtures / info["file"], None, name, tuple(info["inputs"]), refused(name))
        for name, info in m["models"].items()
    ]
    # the PyPI port's re-export of each committed model: NeMo-named safetensors, converted with a preset
    cases += [ModelCase(f"{c.name}_{REEXPORT}", c.nemo, REEXPORT, c.refs, REEXPORT_INPUTS) for c in list(cases)]
    from .oracle.derive import DERIVED_BASE, derived_name, derived_variants

    for suffix in derived_variants():
        name = derived_name(suffix)
        info = m["derived"][name]
        if "inputs" in info:  # NeMo recorded its own references for this variant
            cases.append(ModelCase(name, None, suffix, name, tuple(info["inputs"]), refused(name)))
        else:  # NeMo asserted outputs identical to the base's
            cases.append(ModelCase(name, None, suffix, DERIVED_BASE, tuple(info["identical_to_base_on"])))
    return cases


def materialize(case: ModelCase, workdir: Path, fixtures: Path = FIXTURES) -> Path:
    """The case's `.nemo` on disk (derived ones written into workdir); for a re-export, its folder."""
    if case.derive is None:
        return case.nemo
    if case.derive == REEXPORT:
        return write_reexport(case.nemo, workdir / case.name)
    from .oracle.derive import DERIVED_BASE, derived_variants

    base = fixtures / manifest(fixtures)["models"][DERIVED_BASE]["file"]
    return derived_variants()[case.derive](base, workdir / f"{case.name}.nemo")


def read_input(name: str, fixtures: Path = FIXTURES) -> np.ndarray:
    audio, sr = sf.read(fixtures / "audio" / f"{name}.wav", dtype="float32", always_2d=False)
    assert sr == manifest(fixtures)["sample_rate"], f"{name}: sample rate {sr}"
    return audio


def read_ref(case: ModelCase, name: str, fixtures: Path = FIXTURES) -> dict[str, np.ndarray]:
    return load_file(str(fixtures / "refs" / case.refs / f"{name}.safetensors"))


def batch_refs(case: ModelCase, fixtures: Path = FIXTURES) -> list[str]:
    folder = fixtures / "refs" / case.refs
    return sorted(p.stem for p in folder.glob("batch_*.safetensors"))
