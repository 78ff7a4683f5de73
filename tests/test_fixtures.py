"""The committed NeMo fixtures (tests/fixtures): integrity against the manifest, valid `.nemo`
archives, informative weights (token diversity, output level, token dependence) measured on NeMo's
own recorded outputs, and the deterministic derived variants. No NeMo needed."""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures"
MANIFEST = json.loads((FIX / "manifest.json").read_text())
MODELS = sorted(MANIFEST["models"])
BUDGET_BYTES = 15_000_000


def _derive():
    spec = importlib.util.spec_from_file_location("oracle_derive", ROOT / "parity" / "oracle" / "derive.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


derive = _derive()


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def rms(x) -> float:
    x = np.asarray(x, np.float64)
    return float(np.sqrt(np.mean(x**2)))


def ref(model: str, name: str) -> dict:
    return load_file(str(FIX / "refs" / model / f"{name}.safetensors"))


def speech_clip(model: str) -> str:
    """speech_4s where recorded; NeMo's older codecs record only speech_0p5s (budget; their speech_4s
    figures, computed by NeMo at build time, are in the manifest and checked below)."""
    return "speech_4s" if "speech_4s" in MANIFEST["models"][model]["inputs"] else "speech_0p5s"


# ---------------------------------------------------------------------------------------------
# integrity
# ---------------------------------------------------------------------------------------------
def manifest_files():
    out = [(i["file"], i["sha256"]) for i in MANIFEST["inputs"].values()]
    out += [(m["file"], m["sha256"]) for m in MANIFEST["models"].values()]
    out += list(MANIFEST["refs"].items())
    return out


@pytest.mark.parametrize("rel,digest", manifest_files(), ids=[f for f, _ in manifest_files()])
def test_sha256_matches_manifest(rel, digest):
    assert sha256(FIX / rel) == digest


def test_every_fixture_file_is_in_the_manifest():
    listed = {f for f, _ in manifest_files()} | {"manifest.json"}
    present = {str(p.relative_to(FIX)) for p in FIX.rglob("*") if p.is_file()}
    assert present - listed == set(), "files not recorded in the manifest"
    assert listed - present == set(), "manifest lists missing files"


def test_fixtures_fit_the_budget():
    total = sum(p.stat().st_size for p in FIX.rglob("*") if p.is_file())
    assert total <= BUDGET_BYTES, total


def test_discriminator_spec_matches_manifest():
    assert sha256(ROOT / "parity" / "oracle" / "discriminator_spec.json") == MANIFEST["discriminator_spec_sha256"]


@pytest.mark.parametrize("name", sorted(MANIFEST["inputs"]))
def test_audio_inputs(name):
    info = MANIFEST["inputs"][name]
    path = FIX / info["file"]
    meta = sf.info(str(path))
    assert meta.samplerate == 22050 and meta.channels == 1 and meta.subtype == "FLOAT"
    x, _ = sf.read(str(path), dtype="float32")
    assert len(x) == info["num_samples"]
    assert np.all(np.abs(x) <= 1.0)
    if name == "silence":
        assert not x.any()
    else:
        assert np.abs(x).max() > 0.05, "only silence may be silent"


# ---------------------------------------------------------------------------------------------
# .nemo archives
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_nemo_is_valid_tar(model):
    path = FIX / MANIFEST["models"][model]["file"]
    assert path.stat().st_size == MANIFEST["models"][model]["bytes"]
    if MANIFEST["models"][model]["config"]["audio_decoder"]["_target_"].endswith(".HiFiGANDecoder"):
        with open(path, "rb") as f:  # NeMo's older codecs are committed as tar.gz (NeMo reads "r:gz")
            head = f.read(10)
        assert head[:2] == b"\x1f\x8b" and head[4:8] == b"\0\0\0\0", "gzip with mtime 0"
    with tarfile.open(path, "r:*") as tar:
        names = tar.getnames()
        assert sorted(names) == [".", "./model_config.yaml", "./model_weights.ckpt"], names
        for m in tar.getmembers():
            assert m.mtime == 0 and m.uid == 0 and m.gid == 0, m.name
        cfg = yaml.safe_load(tar.extractfile("./model_config.yaml").read())
        state = torch.load(io.BytesIO(tar.extractfile("./model_weights.ckpt").read()), map_location="cpu",
                           weights_only=True)
    assert cfg["target"].endswith("AudioCodecModel")
    want = MANIFEST["models"][model]["config"]
    for k in ("sample_rate", "samples_per_frame", "audio_encoder", "vector_quantizer", "audio_decoder"):
        assert cfg[k] == want[k], k
    assert any(k.endswith("parametrizations.weight.original0") for k in state)
    assert any(k.startswith("mel_loss_fn.") for k in state), "loss buffers are part of what NeMo saves"
    n_enc = sum(v.numel() for k, v in state.items() if k.startswith("audio_encoder."))
    n_dec = sum(v.numel() for k, v in state.items() if k.startswith("audio_decoder."))
    assert (n_enc, n_dec) == (MANIFEST["models"][model]["params"]["encoder"], MANIFEST["models"][model]["params"]["decoder"])
    # the informative init: snake alphas are not NeMo's all-ones init
    if "snake" in cfg["audio_decoder"].get("activation", ""):
        alphas = torch.cat([v.flatten() for k, v in state.items() if k.endswith("snake_act.alpha")])
        assert alphas.numel() > 0 and alphas.std() > 0.1


# ---------------------------------------------------------------------------------------------
# informative weights, measured on NeMo's recorded outputs
# ---------------------------------------------------------------------------------------------
def test_reference_schema():
    m = "nano0p6_replicate"
    spf = MANIFEST["models"][m]["config"]["samples_per_frame"]
    r = ref(m, "speech_4s")
    g = MANIFEST["models"][m]["config"]["vector_quantizer"]["num_groups"]
    f = -(-MANIFEST["inputs"]["speech_4s"]["num_samples"] // spf)
    assert r["tokens"].dtype == np.int32 and r["tokens"].shape == (1, g, f)
    assert r["tokens_len"].dtype == np.int64 and r["tokens_len"].tolist() == [f]
    assert r["latents"].dtype == np.float32 and r["latents"].shape == r["prerounding"].shape
    assert r["decoded"].shape == (1, f * spf) and r["decoded_len"].tolist() == [f * spf]


@pytest.mark.parametrize("model", MODELS)
def test_token_diversity(model):
    assert MANIFEST["models"][model]["figures"]["speech_4s_min_distinct_fraction"] >= 0.5
    tok = ref(model, speech_clip(model))["tokens"][0]
    frames = tok.shape[1]
    for g in range(tok.shape[0]):
        assert len(np.unique(tok[g])) >= frames / 2, f"codebook {g}: {len(np.unique(tok[g]))}/{frames}"


@pytest.mark.parametrize("model", MODELS)
def test_decoded_level(model):
    assert 0.05 <= rms(ref(model, speech_clip(model))["decoded"]) <= 0.5
    for inp in MANIFEST["models"][model]["inputs"]:
        dec = ref(model, inp)["decoded"]
        assert np.mean(np.abs(dec) >= 1.0) < 0.01, inp


@pytest.mark.parametrize("model", MODELS)
def test_decodes_depend_on_tokens(model):
    clips = [c for c in ["speech_4s", "sine_sweep", "white_noise", "clipped_square", "speech_0p5s"]
             if c in MANIFEST["models"][model]["inputs"]]
    assert len(clips) >= 2
    assert MANIFEST["models"][model]["figures"]["min_cross_clip_decode_rms_diff"] >= 0.05
    decs = {c: ref(model, c)["decoded"][0] for c in clips}
    for i, a in enumerate(clips):
        for b in clips[i + 1:]:
            n = min(len(decs[a]), len(decs[b]))
            assert rms(decs[a][:n] - decs[b][:n]) >= 0.05, (a, b)


@pytest.mark.parametrize("model", MODELS)
def test_prerounding_consistent_with_tokens(model):
    """NeMo's pre-rounding values round to its tokens (digit by digit, base = cumprod of levels)."""
    cfg = MANIFEST["models"][model]["config"]["vector_quantizer"]
    levels = np.array(cfg["num_levels_per_group"])
    base = np.cumprod([1] + list(levels[:-1]))
    r = ref(model, speech_clip(model))
    pre = r["prerounding"][0].reshape(cfg["num_groups"], len(levels), -1)
    idx = ((np.round(pre) + (levels // 2)[None, :, None]) * base[None, :, None]).sum(1)
    assert np.array_equal(idx.astype(np.int32), r["tokens"][0])


def test_batches_recorded_with_junk():
    for model in MODELS:
        for b in MANIFEST["models"][model]["batches"]:
            r = ref(model, b)
            lens = r["audio_len"]
            for i, n in enumerate(lens):
                tail = r["audio"][i, n:]
                if b == "batch_junk":
                    assert tail.size == 0 or np.abs(tail).max() > 0
                else:
                    assert not tail.any()
            assert r["item_tokens"].shape == r["tokens"].shape
    assert any(MANIFEST["models"][m]["batches"] for m in MODELS)


# ---------------------------------------------------------------------------------------------
# derived variants
# ---------------------------------------------------------------------------------------------
BASE = FIX / "models" / f"{derive.DERIVED_BASE}.nemo"


@pytest.mark.parametrize("suffix", sorted(derive.derived_variants()))
def test_derived_is_deterministic(suffix, tmp_path):
    fn = derive.derived_variants()[suffix]
    a = fn(BASE, tmp_path / "a.nemo").read_bytes()
    b = fn(BASE, tmp_path / "b.nemo").read_bytes()
    assert a == b


def _state(path):
    return derive.load_weights(derive.read_nemo(path)[derive.WEIGHTS_NAME])


def _cfg(path):
    return derive.load_config(derive.read_nemo(path)[derive.CONFIG_NAME])


def test_derive_reflect(tmp_path):
    p = derive.derive_reflect(BASE, tmp_path / "r.nemo")
    base, new = _state(BASE), _state(p)
    assert list(base) == list(new) and all(torch.equal(base[k], new[k]) for k in base)
    c0, c1 = _cfg(BASE), _cfg(p)
    assert c0["audio_encoder"]["pad_mode"] == "replicate" and c1["audio_encoder"]["pad_mode"] == "reflect"
    c1["audio_encoder"]["pad_mode"] = "replicate"
    assert c0 == c1


def test_derive_legacy_weight_norm(tmp_path):
    p = derive.derive_legacy_weight_norm(BASE, tmp_path / "l.nemo")
    base, new = _state(BASE), _state(p)
    assert not any("parametrizations" in k for k in new)
    assert len(base) == len(new)
    for (k0, v0), (k1, v1) in zip(base.items(), new.items()):
        k0 = k0.replace(".parametrizations.weight.original0", ".weight_g").replace(
            ".parametrizations.weight.original1", ".weight_v")
        assert k0 == k1 and torch.equal(v0, v1)
    assert _cfg(p) == _cfg(BASE)


def test_derive_with_discriminator(tmp_path):
    p = derive.derive_with_discriminator(BASE, tmp_path / "d.nemo")
    base, new = _state(BASE), _state(p)
    spec = derive.load_discriminator_spec()
    extra = [k for k in new if k not in base]
    assert extra == [t["key"] for t in spec["tensors"]] and all(k.startswith("discriminator.") for k in extra)
    for t in spec["tensors"]:
        assert list(new[t["key"]].shape) == t["shape"]
    assert all(torch.equal(base[k], new[k]) for k in base)
    cfg = _cfg(p)
    assert cfg["discriminator"] == spec["config"]
    del cfg["discriminator"]
    assert cfg == _cfg(BASE)
