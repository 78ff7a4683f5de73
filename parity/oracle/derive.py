"""Deterministic variants of a base `.nemo` fixture, derived at test time (never committed).

Importable WITHOUT NeMo (stdlib, yaml, torch only): the main test environment uses it too.

- `derive_reflect`: same weights, `audio_encoder.pad_mode: reflect` (HiFiGANEncoder's class default).
- `derive_legacy_weight_norm`: weight-norm tensors renamed to the legacy `weight_g` / `weight_v` names
  (what `torch.nn.utils.weight_norm` wrote; NeMo 3.0.0 always writes the parametrization names).
- `derive_with_discriminator`: a tiny `discriminator` section (NeMo's `Discriminator` wrapping one
  `MultiResolutionDiscriminatorSTFT` with one small resolution) plus its tensors, generated from a seed
  with the key names/shapes NeMo itself produced (recorded by build_fixtures.py in discriminator_spec.json).

Every function writes a byte-reproducible `.nemo` (see `write_nemo`) and returns its path.
"""
from __future__ import annotations

import copy
import io
import json
import os
import re
import tarfile
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch
import yaml

HERE = Path(__file__).resolve().parent
DISCRIMINATOR_SPEC = HERE / "discriminator_spec.json"
CONFIG_NAME = "model_config.yaml"
WEIGHTS_NAME = "model_weights.ckpt"
DISCRIMINATOR_SEED = 1234

_NEW_G = ".parametrizations.weight.original0"
_NEW_V = ".parametrizations.weight.original1"


# ----------------------------------------------------------------------------------------------
# .nemo reading / deterministic writing
# ----------------------------------------------------------------------------------------------
def read_nemo(path) -> dict[str, bytes]:
    """Member name (without a leading './') -> bytes, for every regular file in the tar."""
    out = {}
    with tarfile.open(path, "r:*") as tar:
        for m in tar.getmembers():
            if m.isfile():
                name = m.name[2:] if m.name.startswith("./") else m.name
                out[name] = tar.extractfile(m).read()
    return out


def nemo_tar_bytes(members: dict[str, bytes]) -> bytes:
    """An uncompressed tar laid out as NeMo's save_to writes it (a '.' directory entry and
    './<name>' members), with sorted members, mtime 0, uid/gid 0, no owner names."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo(".")
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        d.mtime = 0
        tar.addfile(d)
        for name in sorted(members):
            data = members[name]
            ti = tarfile.TarInfo("./" + name)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = 0
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def write_nemo(path, members: dict[str, bytes], gzip: bool = False) -> Path:
    """gzip: a tar.gz, as NeMo wrote before 1.7 and still reads (`_tar_open` falls back to "r:gz");
    deterministic too (gzip header mtime 0, no file name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = nemo_tar_bytes(members)
    if gzip:
        import gzip as gz

        buf = io.BytesIO()
        with gz.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as f:
            f.write(data)
        data = buf.getvalue()
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def repack_nemo(src, dst, gzip: bool = False) -> Path:
    """Rewrite a NeMo-written .nemo byte-reproducibly (same member bytes)."""
    return write_nemo(dst, read_nemo(src), gzip=gzip)


def load_weights(data: bytes) -> "OrderedDict[str, torch.Tensor]":
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def save_weights(state: dict) -> bytes:
    """torch.save to a file named model_weights.ckpt (as NeMo does; the zip's inner folder takes the
    file's stem), read back. torch.save output is byte-reproducible for the same tensors."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / WEIGHTS_NAME
        torch.save(state, p)
        return p.read_bytes()


def load_config(data: bytes) -> dict:
    return yaml.safe_load(data.decode("utf-8"))


def dump_config(cfg: dict) -> bytes:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None).encode("utf-8")


# ----------------------------------------------------------------------------------------------
# variants
# ----------------------------------------------------------------------------------------------
def derive_reflect(base, out) -> Path:
    m = read_nemo(base)
    cfg = load_config(m[CONFIG_NAME])
    root = cfg.get("model", cfg)
    root["audio_encoder"]["pad_mode"] = "reflect"
    m[CONFIG_NAME] = dump_config(cfg)
    return write_nemo(out, m)


def legacy_weight_norm_state(state: dict) -> "OrderedDict[str, torch.Tensor]":
    out = OrderedDict()
    for k, v in state.items():
        if k.endswith(_NEW_G):
            k = k[: -len(_NEW_G)] + ".weight_g"
        elif k.endswith(_NEW_V):
            k = k[: -len(_NEW_V)] + ".weight_v"
        out[k] = v
    return out


def derive_legacy_weight_norm(base, out) -> Path:
    m = read_nemo(base)
    state = load_weights(m[WEIGHTS_NAME])
    new = legacy_weight_norm_state(state)
    assert sum(k.endswith(".weight_g") for k in new) > 0
    m[WEIGHTS_NAME] = save_weights(new)
    return write_nemo(out, m)


def load_discriminator_spec(path=DISCRIMINATOR_SPEC) -> dict:
    return json.loads(Path(path).read_text())


def discriminator_tensors(spec: dict, seed: int = DISCRIMINATOR_SEED) -> "OrderedDict[str, torch.Tensor]":
    """Tensors for the spec's keys: parameters ~ N(0, 0.05^2) from one seeded generator in key
    order (weight-norm g positive), buffers with the values NeMo recorded."""
    gen = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for t in spec["tensors"]:
        shape = tuple(t["shape"])
        if t["kind"] == "buffer":
            out[t["key"]] = torch.tensor(t["values"], dtype=getattr(torch, t["dtype"])).reshape(shape)
        else:
            x = torch.randn(shape, generator=gen, dtype=torch.float32) * 0.05
            if t["key"].endswith(_NEW_G):
                x = x.abs() + 0.5
            out[t["key"]] = x
    return out


def derive_with_discriminator(base, out, spec_path=DISCRIMINATOR_SPEC) -> Path:
    spec = load_discriminator_spec(spec_path)
    m = read_nemo(base)
    cfg = load_config(m[CONFIG_NAME])
    root = cfg.get("model", cfg)
    # insert the discriminator section right after audio_decoder (NeMo's own order)
    new_root = {}
    for k, v in root.items():
        new_root[k] = v
        if k == "audio_decoder":
            new_root["discriminator"] = copy.deepcopy(spec["config"])
    if "discriminator" not in new_root:
        new_root["discriminator"] = copy.deepcopy(spec["config"])
    if "model" in cfg:
        cfg["model"] = new_root
    else:
        cfg = new_root
    m[CONFIG_NAME] = dump_config(cfg)

    state = load_weights(m[WEIGHTS_NAME])
    disc = discriminator_tensors(spec)
    new = OrderedDict()
    inserted = False
    keys = list(state)
    last_dec = max(i for i, k in enumerate(keys) if k.startswith("audio_decoder."))
    for i, k in enumerate(keys):
        new[k] = state[k]
        if i == last_dec:
            new.update(disc)
            inserted = True
    assert inserted
    m[WEIGHTS_NAME] = save_weights(new)
    return write_nemo(out, m)


def derived_variants() -> dict[str, Callable]:
    """Variant name suffix -> function(base_path, out_path). Names: nano0p6_<suffix>."""
    return {
        "reflect": derive_reflect,
        "legacy_wn": derive_legacy_weight_norm,
        "with_disc": derive_with_discriminator,
    }


# the base every variant is derived from
DERIVED_BASE = "nano0p6_replicate"


def derived_name(suffix: str) -> str:
    return re.sub(r"_replicate$", "", DERIVED_BASE) + "_" + suffix
