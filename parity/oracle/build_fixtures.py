"""Build the NeMo fixtures: real `.nemo` checkpoints of the NanoCodec architecture with seeded,
informative weights, and NeMo's reference outputs for every test clip.

Runs inside the oracle environment (imports NeMo). `make fixtures` (and `make fixtures FULL=1`).
Everything is deterministic: same machine twice -> identical sha256 for every file.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nemo_oracle as O  # noqa: E402
from derive import (  # noqa: E402
    CONFIG_NAME, DERIVED_BASE, DISCRIMINATOR_SPEC, _NEW_G, derived_name, derived_variants, repack_nemo,
)

M = "nemo.collections.tts.modules.audio_codec_modules."
L = "nemo.collections.tts.losses.audio_codec_loss."

# name -> architecture; every model is built with seed SEEDS[name]
MODELS = {
    "nano0p6_replicate": dict(spf=1764, down=[2, 3, 6, 7, 7], groups=4, levels=[9, 8, 8, 7], enc_base=2, dec_base=96),
    "nano1p89": dict(spf=1024, down=[2, 2, 4, 8, 8], groups=8, levels=[8, 7, 6, 6], enc_base=2, dec_base=64),
    "nano1p78": dict(spf=1764, down=[2, 3, 6, 7, 7], groups=13, levels=[8, 7, 6, 6], enc_base=2, dec_base=64),
    # NeMo's older codecs (non-causal HiFiGANDecoder), reduced width; written as tar.gz (NeMo's
    # pre-1.7 form, which it still reads): the zip container of a small state dict is mostly padding
    "lfsc": dict(family="lfsc", spf=1024, down=[2, 2, 4, 8, 8], groups=8, levels=[8, 7, 6, 6], enc_base=1,
                 dec_base=32, gzip=True),
    "audio22k": dict(family="audio_codec", spf=256, down=[2, 2, 8, 8], groups=8, levels=[8, 5, 5, 5], enc_base=1,
                     dec_base=32, gzip=True),
    "audio44k": dict(family="audio_codec", sample_rate=44100, spf=512, down=[2, 4, 8, 8], groups=8,
                     levels=[8, 5, 5, 5], enc_base=1, dec_base=32, gzip=True),
}
FULL = {"nano0p6_full": dict(spf=1764, down=[2, 3, 6, 7, 7], groups=4, levels=[9, 8, 8, 7], enc_base=24, dec_base=864)}
FULL_INPUTS = ["speech_0p5s", "speech_4s", "len_1765"]
SEEDS = {"nano0p6_replicate": 1001, "nano1p89": 1002, "nano1p78": 1003, "nano0p6_full": 1004,
         "lfsc": 1005, "audio22k": 1006, "audio44k": 1007}
CALIBRATION_CLIP = "speech_4s"
ALPHA_RANGE = (0.5, 2.0)
BIAS_SHRINK = 0.05
TARGET_RMS = {"hidden": 1.0, "residual_branch": 0.3, "decoder_output": 0.15, "encoder_latent_std": 1.0}
CROSS_CLIPS = ["speech_4s", "sine_sweep", "white_noise", "clipped_square", "speech_0p5s"]


def model_config(a: dict, pad_mode: str = "replicate") -> dict:
    family = a.get("family", "nanocodec")
    if family != "nanocodec":
        return older_codec_config(a)
    dim = a["groups"] * len(a["levels"])
    return {
        "target": "nemo.collections.tts.models.audio_codec.AudioCodecModel",
        "sample_rate": 22050,
        "samples_per_frame": a["spf"],
        "audio_encoder": {
            "_target_": M + "HiFiGANEncoder",
            "down_sample_rates": list(a["down"]),
            "encoded_dim": dim,
            "base_channels": a["enc_base"],
            "in_kernel_size": 7,
            "out_kernel_size": 7,
            "resblock_kernel_sizes": [3, 7, 11],
            "resblock_dilation_sizes": [1, 3, 5],
            "activation": "lrelu",
            "pad_mode": pad_mode,
        },
        "vector_quantizer": {
            "_target_": M + "GroupFiniteScalarQuantizer",
            "num_groups": a["groups"],
            "num_levels_per_group": list(a["levels"]),
        },
        "audio_decoder": {
            "_target_": M + "CausalHiFiGANDecoder",
            "input_dim": dim,
            "up_sample_rates": list(reversed(a["down"])),
            "base_channels": a["dec_base"],
            "in_kernel_size": 7,
            "out_kernel_size": 3,
            "resblock_kernel_sizes": [3, 7, 11],
            "resblock_dilation_sizes": [1, 3, 5],
            "activation": "half_snake",
            "output_activation": "clamp",
            "pad_mode": "zeros",
            "n_groups_equal_to_out_channels": True,
        },
        # training keys AudioCodecModel.__init__ requires (tiny; their buffers land in the state dict)
        "loss_resolutions": [[32, 8, 32]],
        "mel_loss_dims": [5],
        "commit_loss_scale": 0.0,  # FSQ has no commit loss; NeMo's default 1.0 would raise
        "generator_loss": {"_target_": L + "GeneratorSquaredLoss"},
        "discriminator_loss": {"_target_": L + "DiscriminatorSquaredLoss"},
    }


def older_codec_config(a: dict) -> dict:
    """NeMo's example configs examples/tts/conf/audio_codec/audio_codec_low_frame_rate_22050.yaml (LFSC)
    and audio_codec_{22050,44100}.yaml (the 22/44 kHz audio codecs) at reduced width: their
    inference sections key for key (absent keys are NeMo's class defaults, e.g. pad_mode reflect)."""
    cfg = model_config({**a, "family": "nanocodec"})
    dim = a["groups"] * len(a["levels"])
    enc = {"_target_": M + "HiFiGANEncoder", "down_sample_rates": list(a["down"]), "encoded_dim": dim,
           "base_channels": a["enc_base"], "activation": "lrelu"}
    dec = {"_target_": M + "HiFiGANDecoder", "up_sample_rates": list(reversed(a["down"])), "input_dim": dim,
           "base_channels": a["dec_base"]}
    if a["family"] == "lfsc":
        enc["resblock_dilation_sizes"] = [1]
        dec.update(activation="lrelu", output_activation="tanh")
    else:
        dec.update(activation="half_snake", output_activation="clamp")
    cfg.update(sample_rate=a.get("sample_rate", 22050), audio_encoder=enc, audio_decoder=dec)
    return cfg


DISC_CONFIG = {
    "_target_": M + "Discriminator",
    "discriminators": [
        {"_target_": M + "MultiResolutionDiscriminatorSTFT", "resolutions": [[64, 16, 64]], "stft_bands": [[0.0, 1.0]]}
    ],
}


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def rms(x) -> float:
    x = torch.as_tensor(x, dtype=torch.float64)
    return float(x.pow(2).mean().sqrt())


# ----------------------------------------------------------------------------------------------
# informative weights
# ----------------------------------------------------------------------------------------------
def conv_modules(root):
    """NeMo's conv wrappers (Conv1dNorm, CausalConv1dNorm, CausalConvTranspose1dNorm) under root."""
    out = []
    for name, m in root.named_modules():
        if type(m).__name__ in ("Conv1dNorm", "CausalConv1dNorm", "CausalConvTranspose1dNorm", "ConvTranspose1dNorm"):
            out.append((name, m))
    return out


def scale_conv(m, factor: float, shift=None):
    """y -> factor*(y - shift) through weight-norm g (original0) and the bias; factor may be per
    output channel (only for Conv1d, whose g is per output channel)."""
    g = m.conv.parametrizations.weight.original0
    b = m.conv.bias
    f = torch.as_tensor(factor, dtype=torch.float32)
    if f.ndim == 0:
        g.data.mul_(f)
    else:
        g.data.mul_(f.view(-1, 1, 1))
    if shift is not None:
        b.data.sub_(shift)
    b.data.mul_(f)


def calibrate(root, run, role_of, record: dict, prefix: str, per_channel=None):
    """Layer-sequential rescaling in ONE forward: a hook on each conv, called in execution order,
    measures its output on the calibration input, rescales that conv's g and bias, and returns the
    rescaled output so every later layer is calibrated on already-calibrated inputs."""
    hooks = []

    def make(name, m):
        def hook(mod, args, out):
            role = role_of(name)
            if per_channel is not None and name == per_channel:
                mean = out.mean(dim=(0, 2))
                std = out.std(dim=(0, 2)).clamp_min(1e-8)
                f = TARGET_RMS["encoder_latent_std"] / std
                scale_conv(mod, f, shift=mean)
                record[prefix + name] = {"role": "encoder_latent", "factor": f.tolist(), "shift": mean.tolist()}
                return (out - mean.view(1, -1, 1)) * f.view(1, -1, 1)
            f = TARGET_RMS[role] / max(rms(out), 1e-12)
            scale_conv(mod, f)
            record[prefix + name] = {"role": role, "factor": f}
            return out * f
        return hook

    for name, m in conv_modules(root):
        hooks.append(m.register_forward_hook(make(name, m)))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in hooks:
            h.remove()


def role(name: str, last: str) -> str:
    if name == last:
        return "decoder_output"
    if name.endswith("skip_conv"):
        return "residual_branch"
    return "hidden"


def make_informative(model, seed: int) -> dict:
    rec = {"alpha_range": list(ALPHA_RANGE), "bias_shrink": BIAS_SHRINK, "targets": TARGET_RMS,
           "calibration_clip": CALIBRATION_CLIP, "alpha_seed": seed + 500000, "factors": {}}
    gen = torch.Generator().manual_seed(seed + 500000)
    with torch.no_grad():
        # Snake alphas per channel, uniform in ALPHA_RANGE (key order)
        for name, p in model.named_parameters():
            if name.endswith("snake_act.alpha"):
                p.copy_(ALPHA_RANGE[0] + (ALPHA_RANGE[1] - ALPHA_RANGE[0]) * torch.rand(p.shape, generator=gen))
        # shrink every conv bias (non-zero stays non-zero)
        for root in (model.audio_encoder, model.audio_decoder):
            for _, m in conv_modules(root):
                m.conv.bias.mul_(BIAS_SHRINK)

    x = torch.from_numpy(O.load_audio(CALIBRATION_CLIP))[None]
    xl = torch.tensor([x.shape[1]])
    # encoder: hidden convs to unit RMS, residual branches 0.3, last conv per channel to mean 0 / std 1
    enc_convs = [n for n, _ in conv_modules(model.audio_encoder)]
    calibrate(model.audio_encoder, lambda: model.audio_encoder(audio=x, audio_len=xl),
              lambda n: role(n, None), rec["factors"], "audio_encoder.", per_channel=enc_convs[-1])
    with torch.no_grad():
        tokens, tlen = model.encode(audio=x, audio_len=xl)
        deq = model.dequantize(tokens=tokens, tokens_len=tlen)
    dec_convs = [n for n, _ in conv_modules(model.audio_decoder)]
    calibrate(model.audio_decoder, lambda: model.audio_decoder(inputs=deq, input_len=tlen),
              lambda n: role(n, dec_convs[-1]), rec["factors"], "audio_decoder.")
    return rec


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------
def figures(refs: dict) -> dict:
    tok = refs["speech_4s"]["tokens"][0]  # [G,F]
    F = tok.shape[1]
    distinct = [int(torch.unique(tok[g]).numel()) for g in range(tok.shape[0])]
    dec = refs["speech_4s"]["decoded"][0]
    cross = {}
    names = [c for c in CROSS_CLIPS if c in refs]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            n = min(refs[a]["decoded"].shape[1], refs[b]["decoded"].shape[1])
            cross[f"{a}|{b}"] = rms(refs[a]["decoded"][0, :n] - refs[b]["decoded"][0, :n])
    return {
        "speech_4s_frames": F,
        "speech_4s_distinct_codes_per_codebook": distinct,
        "speech_4s_min_distinct_fraction": min(distinct) / F,
        "decoded_rms": {k: rms(v["decoded"]) for k, v in refs.items()},
        "speech_4s_decoded_rms": rms(dec),
        "clamp_fraction": {k: float((v["decoded"].abs() >= 1.0).double().mean()) for k, v in refs.items()},
        "cross_clip_decode_rms_diff": cross,
        "min_cross_clip_decode_rms_diff": min(cross.values()) if cross else None,
    }


def check_figures(name: str, f: dict):
    assert f["speech_4s_min_distinct_fraction"] >= 0.5, (name, f["speech_4s_distinct_codes_per_codebook"])
    assert 0.05 <= f["speech_4s_decoded_rms"] <= 0.5, (name, f["speech_4s_decoded_rms"])
    for k, v in f["clamp_fraction"].items():
        assert v < 0.01, (name, k, v)
    assert f["min_cross_clip_decode_rms_diff"] >= 0.05, (name, f["cross_clip_decode_rms_diff"])


# ----------------------------------------------------------------------------------------------
# building
# ----------------------------------------------------------------------------------------------
def build_model(name: str, arch: dict, out_path: Path, tmp: Path, seed: int | None = None):
    """A seeded informative `.nemo` at out_path (seed: SEEDS[name] unless given; live parity passes its own)."""
    from nemo.collections.tts.models import AudioCodecModel
    from omegaconf import OmegaConf

    seed = SEEDS[name] if seed is None else seed
    cfg = model_config(arch)
    torch.manual_seed(seed)
    model = AudioCodecModel(cfg=OmegaConf.create(cfg))
    model.eval()
    init = make_informative(model, seed)
    raw = tmp / f"{name}.raw.nemo"
    model.save_to(str(raw))
    repack_nemo(raw, out_path, gzip=arch.get("gzip", False))
    restored = O.restore(out_path)
    O.assert_state_matches(restored, out_path)
    sd0, sd1 = model.state_dict(), restored.state_dict()
    assert all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    params = {
        "encoder": sum(p.numel() for p in restored.audio_encoder.parameters()),
        "decoder": sum(p.numel() for p in restored.audio_decoder.parameters()),
    }
    params["total"] = params["encoder"] + params["decoder"]
    return restored, cfg, init, params


def save_refs(path: Path, tensors: dict):
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    path.chmod(0o644)


def record_model_refs(model, name: str, refs_dir: Path, inputs: list[str], batches: bool, manifest_refs: dict):
    refs = {}
    for inp in inputs:
        r = O.run_single(model, O.load_audio(inp))
        refs[inp] = r
        p = refs_dir / name / f"{inp}.safetensors"
        save_refs(p, r)
        manifest_refs[f"refs/{name}/{inp}.safetensors"] = None
    if batches:
        for bname, junk in (("batch_ragged", False), ("batch_junk", True)):
            audio, alen = O.batch_audio(junk)
            r = O.run_batch(model, audio, alen)
            save_refs(refs_dir / name / f"{bname}.safetensors", r)
            manifest_refs[f"refs/{name}/{bname}.safetensors"] = None
    return refs


def reflect_crashes(model, spf: int) -> list:
    """NeMo itself crashes with pad_mode reflect on inputs of <= 3 frames: record what it raises."""
    out = []
    for inp in O.INPUTS:
        x = O.load_audio(inp)
        if O.num_frames(len(x), spf) > 3:
            continue
        try:
            O.run_single(model, x)
            out.append({"input": inp, "frames": O.num_frames(len(x), spf), "raised": None})
        except Exception as e:  # noqa: BLE001
            out.append({"input": inp, "frames": O.num_frames(len(x), spf), "raised": type(e).__name__,
                        "message": str(e).strip().splitlines()[-1][:400]})
    return out


def nemo_refusals(model, spf: int) -> list:
    """The short inputs (at most 8 frames) NeMo raises on, with what it raises."""
    out = []
    for inp in O.INPUTS:
        x = O.load_audio(inp)
        if inp in O.NOT_RECORDED or O.num_frames(len(x), spf) > 8:
            continue
        try:
            O.run_single(model, x)
        except Exception as e:  # noqa: BLE001
            out.append({"input": inp, "frames": O.num_frames(len(x), spf), "raised": type(e).__name__,
                        "message": str(e).strip().splitlines()[-1][:400]})
    return out


def record_discriminator_spec(base_cfg: dict):
    """Instantiate NeMo's model with the tiny discriminator and record the discriminator.* keys,
    shapes, kinds (and buffer values) that derive.py needs."""
    from nemo.collections.tts.models import AudioCodecModel
    from omegaconf import OmegaConf

    cfg = copy.deepcopy(base_cfg)
    cfg["discriminator"] = copy.deepcopy(DISC_CONFIG)
    torch.manual_seed(0)
    m = AudioCodecModel(cfg=OmegaConf.create(cfg))
    params = {n for n, _ in m.named_parameters()}
    tensors = []
    for k, v in m.state_dict().items():
        if not k.startswith("discriminator."):
            continue
        t = {"key": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", "")}
        if k in params:
            t["kind"] = "parameter"
        else:
            t["kind"] = "buffer"
            t["values"] = v.flatten().tolist()
        tensors.append(t)
    spec = {"config": DISC_CONFIG, "tensors": tensors,
            "note": "recorded from NeMo by build_fixtures.py; derive.py fills parameters from a seed"}
    DISCRIMINATOR_SPEC.write_text(json.dumps(spec, indent=1) + "\n")
    return spec


def check_derived(base_model, base_path: Path, tmp: Path, spf: int) -> dict:
    """Derive each variant, restore it with NeMo, assert identical outputs (legacy / with_disc) or
    record references (reflect). Returns manifest info."""
    info = {}
    probe = ["speech_4s", "len_1765", "len_1"]
    base_out = {p: O.run_single(base_model, O.load_audio(p)) for p in probe}
    for suffix, fn in derived_variants().items():
        name = derived_name(suffix)
        p = fn(base_path, tmp / f"{name}.nemo")
        m = O.restore(p)
        O.assert_state_matches(m, p)
        entry = {"function": fn.__name__, "sha256_here": sha256(p)}
        if suffix == "reflect":
            info[name] = entry
            continue
        for inp, ref in base_out.items():
            r = O.run_single(m, O.load_audio(inp))
            for k in ref:
                assert torch.equal(r[k], ref[k]), (name, inp, k)
        if suffix == "with_disc":
            sd = m.state_dict()
            nd = sum(1 for k in sd if k.startswith("discriminator."))
            assert nd > 0 and hasattr(m, "discriminator")
            entry["discriminator_tensors"] = nd
        entry["identical_to_base_on"] = probe
        info[name] = entry
    return info


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="also build the full-size 0.6 kbps model")
    ap.add_argument("--full-dir", default=str(O.REPO / "cache" / "fixtures-full"))
    ap.add_argument("--skip-small", action="store_true", help="only the full-size model")
    args = ap.parse_args(argv)
    O.quiet_nemo()
    torch.set_num_threads(1)
    t0 = time.time()

    if not args.skip_small:
        build_small()
    if args.full:
        build_full(Path(args.full_dir))
    print(f"done in {time.time() - t0:.1f} s")


def build_small():
    manifest = {"format": 1, "versions": O.versions(),
                "generator": "parity/oracle/build_fixtures.py (make fixtures)",
                "sample_rate": O.SR, "inputs": {}, "models": {}, "derived": {}, "refs": {},
                "batch": {"items": [{"name": n, "source": s, "samples_from_start": k} for n, s, k in O.BATCH_ITEMS],
                          "models": O.BATCH_MODELS, "junk_seed": O.JUNK_SEED,
                          "junk": "uniform(-0.5, 0.5) from torch.Generator(junk_seed) over [B,T], then each item's samples written over it"},
                "nemo_facts": {}, "crashes": {}}
    for inp in O.INPUTS:
        p = O.AUDIO_DIR / f"{inp}.wav"
        manifest["inputs"][inp] = {"file": f"audio/{inp}.wav", "sha256": sha256(p),
                                   "num_samples": int(len(O.load_audio(inp)))}
    if O.REFS_DIR.exists():
        shutil.rmtree(O.REFS_DIR)
    O.MODELS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for name, arch in MODELS.items():
            t = time.time()
            out = O.MODELS_DIR / f"{name}.nemo"
            model, cfg, init, params = build_model(name, arch, out, tmp)
            batches = name in O.BATCH_MODELS
            inputs = O.inputs_for(name)
            if name in O.RECORDED_INPUTS:
                # short inputs NeMo refuses (reflect padding) are recorded as such; we must refuse them too
                manifest["crashes"][name] = nemo_refusals(model, arch["spf"])
                refused = {c["input"] for c in manifest["crashes"][name]}
                inputs = [i for i in inputs if i not in refused]
            refs = record_model_refs(model, name, O.REFS_DIR, inputs, batches, manifest["refs"])
            for clip in ["speech_4s"] + CROSS_CLIPS:  # figures only, not saved (budget)
                if clip not in refs:
                    refs[clip] = O.run_single(model, O.load_audio(clip))
            fig = figures(refs)
            check_figures(name, fig)
            manifest["models"][name] = {
                "file": f"models/{name}.nemo", "sha256": sha256(out), "bytes": out.stat().st_size,
                "params": params, "seed": SEEDS[name], "config": cfg, "informative_init": init,
                "figures": fig, "inputs": inputs, "batches": ["batch_ragged", "batch_junk"] if batches else [],
            }
            print(f"{name}: {params['total']} params, {out.stat().st_size} bytes, "
                  f"distinct {fig['speech_4s_distinct_codes_per_codebook']}/{fig['speech_4s_frames']}, "
                  f"rms {fig['speech_4s_decoded_rms']:.3f}, min cross {fig['min_cross_clip_decode_rms_diff']:.3f} "
                  f"({time.time() - t:.1f} s)", flush=True)
            if name == DERIVED_BASE:
                record_discriminator_spec(cfg)
                manifest["derived"] = check_derived(model, out, tmp, arch["spf"])
                # reflect: real references for inputs of > 3 frames; NeMo's crash for the others
                rname = derived_name("reflect")
                rmodel = O.restore(tmp / f"{rname}.nemo")
                longer = O.REFLECT_INPUTS
                assert all(O.num_frames(manifest["inputs"][i]["num_samples"], arch["spf"]) > 3 for i in longer)
                record_model_refs(rmodel, rname, O.REFS_DIR, longer, False, manifest["refs"])
                manifest["derived"][rname]["inputs"] = longer
                manifest["crashes"][rname] = reflect_crashes(rmodel, arch["spf"])
                manifest["nemo_facts"] = nemo_facts(model, arch["spf"])
    for rel in list(manifest["refs"]):
        manifest["refs"][rel] = sha256(O.FIXTURES / rel)
    manifest["discriminator_spec_sha256"] = sha256(DISCRIMINATOR_SPEC)
    O.MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    print(f"manifest: {O.MANIFEST}")


def nemo_facts(model, spf: int) -> dict:
    """Behaviour the port must copy, observed on NeMo directly."""
    facts = {}
    audio = torch.zeros(2, 3000)
    alen = torch.tensor([3000, 100])
    with torch.no_grad():
        pa, pl = model.pad_audio(audio, alen, spf)
        facts["pad_audio"] = {
            "input_len": alen.tolist(), "returned_len": pl.tolist(), "returned_len_dtype": str(pl.dtype),
            "tensor_len": int(pa.shape[1]),
            "encoder_receives": "padded length (ceil(len/spf)*spf), not the original length",
        }
        _, tl = model.encode(audio=audio, audio_len=alen)
        facts["tokens_len_dtype"] = str(tl.dtype)
        _, dl = model.decode(tokens=torch.zeros(1, model.vector_quantizer.num_groups, 2, dtype=torch.int32),
                             tokens_len=torch.tensor([2]))
        facts["decoded_len_dtype"] = str(dl.dtype)
        # a tensor longer than the padded length is cropped by pad_audio (negative F.pad)
        long = torch.zeros(1, 2 * spf + 5)
        pa2, _ = model.pad_audio(long, torch.tensor([spf]), spf)
        facts["pad_audio_crops_longer_tensor"] = {"tensor": 2 * spf + 5, "len": spf, "after": int(pa2.shape[1])}
    facts["masking"] = ("mask_sequence_tensor runs after every conv (Conv1dNorm / CausalConv1dNorm / "
                        "CausalConvTranspose1dNorm forward), with the encoder using the PADDED lengths; the raw "
                        "audio is not masked before pre_conv, so junk between len and the padded length leaks in")
    return facts


def build_full(out_dir: Path):
    out_dir.mkdir(parents=True, exist_ok=True)
    info = {"versions": O.versions(), "models": {}}
    with tempfile.TemporaryDirectory() as td:
        for name, arch in FULL.items():
            t = time.time()
            out = out_dir / f"{name}.nemo"
            model, cfg, init, params = build_model(name, arch, out, Path(td))
            refs = {}
            for inp in FULL_INPUTS:
                r = O.run_single(model, O.load_audio(inp))
                refs[inp] = r
                save_refs(out_dir / "refs" / name / f"{inp}.safetensors", r)
            fig = figures(refs)
            info["models"][name] = {"file": out.name, "sha256": sha256(out), "bytes": out.stat().st_size,
                                    "params": params, "seed": SEEDS[name], "config": cfg, "informative_init": init,
                                    "figures": fig, "inputs": FULL_INPUTS,
                                    "refs": {i: sha256(out_dir / "refs" / name / f"{i}.safetensors") for i in FULL_INPUTS}}
            print(f"{name}: {params} params, {out.stat().st_size} bytes ({time.time() - t:.1f} s)", flush=True)
    (out_dir / "manifest.json").write_text(json.dumps(info, indent=1) + "\n")


if __name__ == "__main__":
    main()
