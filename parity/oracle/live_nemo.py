"""NeMo side of live parity (tier 2): runs in the oracle environment, called by parity/live.py.

  live_nemo.py --work DIR --seed S [--profile default|quick]
      fresh seeded informative `.nemo` files of every variant (built by build_fixtures.build_model, variants
      by derive.py) and fresh inputs drawn from S; NeMo's outputs for each.
  live_nemo.py --work DIR --nemo PATH
      a user's own `.nemo`, restored by NeMo, on the committed speech clips (tests/fixtures/audio/speech_*).

Writes DIR/plan.json (what parity/live.py converts and compares), DIR/models/*.nemo and
DIR/refs/<model>/<input>.safetensors: an item holds `audio` plus run_single's outputs, a batch
run_batch's, an input NeMo refuses only its `audio` (the plan records what NeMo raised).
Everything follows from (seed, profile): the same pair rebuilds the same models and inputs.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nemo_oracle as O  # noqa: E402
from build_fixtures import FULL, MODELS, build_model, save_refs  # noqa: E402
from derive import (  # noqa: E402
    CONFIG_NAME, DERIVED_BASE, derived_name, derived_variants, load_config, read_nemo,
)

SR = O.SR
SPEECH_SOURCES = ["speech_11s", "speech_4s", "speech_0p5s"]  # committed clips fresh speech is cut from
LONG_SECONDS = 60

# profile -> model name -> what to run. "edges": the lengths the issue names (1, 1763, 1765 and the
# frame edge of the model); "random": that many random lengths up to 3 s; "speech": random speech
# crops (PESQ is reported on these); "long": the 60 s clip; "batches": ragged batches, each both
# zero- and junk-padded. The reflect variant also gets NeMo's own threshold lengths (see probe_reflect).
PROFILES = {
    "default": {
        "nano0p6_replicate": dict(edges=True, random=3, speech=2, long=True, batches=2),
        "nano0p6_reflect": dict(edges=True, random=2, speech=1, batches=1),
        "nano0p6_legacy_wn": dict(edges=False, random=1, speech=1, batches=1),
        "nano0p6_with_disc": dict(edges=False, random=1, speech=1, batches=1),
        # the 60 s clip on 1.78, 1.89 and the full-size model too: boundary flips of a fast path grow with
        # the frames compared (a reduced-width 1.89 kbps model saw too many on 60 s inputs on an AMD EPYC)
        "nano1p78": dict(edges=True, random=2, speech=1, long=True, batches=1),
        "nano1p89": dict(edges=True, random=2, speech=1, long=True, batches=1),
        "nano0p6_full": dict(edges=False, lengths=[1, 1765], speech=1, speech_seconds=(2.0, 3.0), long=True,
                             batches=1, batch_seconds=0.6),
        # NeMo's older codecs (non-causal HiFiGANDecoder, reflect padding everywhere)
        "lfsc": dict(edges=True, random=2, speech=1, batches=1),
        "audio22k": dict(edges=True, random=2, speech=1, batches=1),
        "audio44k": dict(edges=True, random=2, speech=1, batches=1),
    },
    "quick": {
        "nano0p6_replicate": dict(edges=False, lengths=[1, 1765], random=1, speech=1, batches=1),
        "nano0p6_reflect": dict(edges=False, lengths=[1765], random=0, speech=0, batches=0),
        "nano0p6_legacy_wn": dict(edges=False, random=0, speech=1, batches=0),
        "lfsc": dict(edges=False, lengths=[1765], random=0, speech=1, batches=1),  # the non-causal decoder
    },
}
ARCHS = {**MODELS, **FULL}
DERIVED = {derived_name(s): s for s in derived_variants()}  # nano0p6_reflect -> reflect, ...
USER_INPUTS = ["speech_0p5s", "speech_4s", "speech_11s"]
# the user's ragged batch: (source clip, seconds from its start or None = all)
USER_BATCH = [("speech_0p5s", None), ("speech_4s", 2.0), ("speech_11s", 3.0)]


def rng_for(seed: int, *what) -> np.random.Generator:
    """An independent stream per (seed, name...): a model's draws do not depend on which others run."""
    return np.random.default_rng([seed] + [zlib.crc32(str(w).encode()) for w in what])


# ----------------------------------------------------------------------------------------------
# fresh inputs
# ----------------------------------------------------------------------------------------------
_SPEECH = None


def speech_pool() -> np.ndarray:
    global _SPEECH
    if _SPEECH is None:
        _SPEECH = np.concatenate([O.load_audio(n) for n in SPEECH_SOURCES])
    return _SPEECH


def speech(rng, n: int) -> np.ndarray:
    """n samples of committed speech: random crops (random offset, gain) joined end to end."""
    pool, out, have = speech_pool(), [], 0
    while have < n:
        k = min(n - have, int(rng.integers(SR // 2, 4 * SR)))
        start = int(rng.integers(0, len(pool) - k))
        out.append(pool[start:start + k] * rng.uniform(0.3, 1.0))
        have += k
    return np.concatenate(out)


def signal(rng, kind: str, n: int) -> np.ndarray:
    t = np.arange(n) / SR
    if kind == "speech":
        x = speech(rng, n)
    elif kind == "noise":
        x = rng.standard_normal(n) * rng.uniform(0.05, 0.4)
    elif kind == "chirp":
        f0, f1 = rng.uniform(30, 500), rng.uniform(1000, 10000)
        dur = max(n / SR, 1e-3)
        x = rng.uniform(0.2, 0.9) * np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * dur)) + rng.uniform(0, 6.3))
    elif kind == "square":
        x = 1.5 * np.sign(np.sin(2 * np.pi * rng.uniform(50, 2000) * t + rng.uniform(0, 6.3)))
    else:
        raise ValueError(kind)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def long_clip(rng) -> np.ndarray:
    """LONG_SECONDS of speech crops with a little noise under it (no exact silence anywhere)."""
    n = LONG_SECONDS * SR
    return np.clip(speech(rng, n) + rng.standard_normal(n) * 0.003, -1, 1).astype(np.float32)


def plan_inputs(rng, spec: dict, spf: int, min_frames: int = 1) -> list[tuple[str, np.ndarray]]:
    """(name, audio) for one model. Names start with the content kind (PESQ only on speech_*)."""
    lengths = list(spec.get("lengths", []))
    if spec.get("edges"):
        lengths += [1, 1763, 1765, spf - 1, spf, spf + 1]
    lengths += [int(rng.integers(2, 3 * SR)) for _ in range(spec.get("random", 0))]
    out = []
    for n in dict.fromkeys(lengths):  # unique, in order
        kind = str(rng.choice(["speech", "noise", "chirp", "square"]))
        out.append((f"{kind}_{n}", signal(rng, kind, n)))
    lo, hi = spec.get("speech_seconds", (1.0, 4.0))
    for _ in range(spec.get("speech", 0)):
        n = max(int(rng.uniform(lo, hi) * SR), min_frames * spf)
        out.append((f"speech_{n}", signal(rng, "speech", n)))
    if spec.get("long"):  # speech, but not named speech_*: PESQ is specified for 8-20 s and costs minutes here
        out.append((f"long_{LONG_SECONDS}s", long_clip(rng)))
    seen, unique = set(), []
    for name, x in out:
        while name in seen:
            name += "b"
        seen.add(name)
        unique.append((name, x))
    return unique


def ragged(rng, spf: int, min_frames: int, max_seconds: float) -> list[np.ndarray]:
    """4 items of distinct lengths: a short one (<= 1 frame unless min_frames says otherwise), two
    mid-length ones and one up to max_seconds; mixed content."""
    lo = (min_frames - 1) * spf + 1
    lengths = {int(rng.integers(lo, max(lo + 1, spf + 2)))}
    while len(lengths) < 4:
        lengths.add(int(rng.integers(lo, int(max_seconds * SR))))
    lengths = list(lengths)
    rng.shuffle(lengths)  # the longest item is not always first
    return [signal(rng, str(rng.choice(["speech", "noise", "chirp"])), n) for n in lengths]


def batch_tensor(rng, clips: list[np.ndarray], junk: bool):
    lens = [len(c) for c in clips]
    T = max(lens)
    audio = (rng.uniform(-0.5, 0.5, (len(clips), T)) if junk else np.zeros((len(clips), T))).astype(np.float32)
    for i, c in enumerate(clips):
        audio[i, : len(c)] = c
    return torch.from_numpy(audio), torch.tensor(lens, dtype=torch.int64)


# ----------------------------------------------------------------------------------------------
# NeMo runs
# ----------------------------------------------------------------------------------------------
def probe_reflect(model, spf: int) -> int:
    """The fewest frames NeMo's reflect-padded encoder accepts (it raises below that)."""
    for frames in range(1, 64):
        try:
            with torch.no_grad():
                model.encode(audio=torch.zeros(1, frames * spf), audio_len=torch.tensor([frames * spf]))
            return frames
        except Exception:  # noqa: BLE001
            continue
    raise RuntimeError("NeMo's reflect encoder refused every length up to 63 frames")


def record(model, name: str, work: Path, inputs, batches) -> dict:
    """Run NeMo on each input (recording a refusal as such) and each ragged batch; save the refs."""
    entry = {"items": [], "rejected": [], "batches": []}
    for inp, x in inputs:
        rel = f"refs/{name}/{inp}.safetensors"
        try:
            r = O.run_single(model, x)
        except Exception as e:  # noqa: BLE001
            msg = str(e).strip().splitlines()[-1][:300] if str(e).strip() else ""
            save_refs(work / rel, {"audio": torch.from_numpy(x)})
            entry["rejected"].append({"input": inp, "ref": rel, "samples": len(x), "nemo": f"{type(e).__name__}: {msg}"})
            continue
        save_refs(work / rel, {"audio": torch.from_numpy(x), **r})
        entry["items"].append({"input": inp, "ref": rel, "samples": len(x), "frames": int(r["tokens_len"][0]),
                               "distinct_codes": distinct_fraction(r["tokens"])})
    items = {}  # batches of the same clips (zero / junk padding) share NeMo's item-by-item outputs
    for bname, (audio, lens, clips_id) in batches:
        rel = f"refs/{name}/{bname}.safetensors"
        r = O.run_batch(model, audio, lens, items.get(clips_id))
        items.setdefault(clips_id, {k: v for k, v in r.items() if k.startswith("item_")})
        save_refs(work / rel, r)
        entry["batches"].append({"name": bname, "ref": rel, "lengths": lens.tolist()})
    return entry


def distinct_fraction(tokens: torch.Tensor) -> float:
    """Smallest fraction of distinct codes per codebook over the frames (informativeness of the seeded model)."""
    t = tokens[0]
    return min(int(torch.unique(t[g]).numel()) for g in range(t.shape[0])) / t.shape[1]


def seeded(work: Path, seed: int, profile: str, tmp: Path) -> list[dict]:
    models_dir = work / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    base_path = None
    for name, spec in PROFILES[profile].items():
        t0, c0 = time.time(), time.process_time()
        rng = rng_for(seed, profile, name)
        variant = DERIVED.get(name)
        out = models_dir / f"{name}.nemo"
        arch = None
        model_seed = None
        if variant is None:
            arch = dict(ARCHS[name])
            if name in MODELS:  # reduced width: draw the widths too
                arch["enc_base"] = int(rng.choice([2, 3, 4]))
                arch["dec_base"] = int(rng.choice([64, 96]))
            model_seed = int(rng.integers(0, 2**31 - 1))
            model, _cfg, _init, params = build_model(name, arch, out, tmp, seed=model_seed)
            if name == DERIVED_BASE:
                base_path, base_arch, base_params = out, arch, params
        else:
            assert base_path is not None, f"{name} is derived from {DERIVED_BASE}, which must come first"
            derived_variants()[variant](base_path, out)
            model = O.restore(out)
            O.assert_state_matches(model, out)
            arch, params = base_arch, base_params  # the base's weights
        spf = arch["spf"]
        entry = {"name": name, "nemo": f"models/{out.name}", "variant": variant or "built", "seed": model_seed,
                 "arch": arch, "params": params, "samples_per_frame": spf, "build_seconds": round(time.time() - t0, 2)}
        min_frames = 1
        lengths = []
        if variant == "reflect" or arch.get("family", "nanocodec") != "nanocodec":
            min_frames = probe_reflect(model, spf)
            entry["nemo_min_frames"] = min_frames
            lengths = [(min_frames - 1) * spf, (min_frames - 1) * spf + 1]  # refused, then the first accepted
        inputs = plan_inputs(rng, {**spec, "lengths": list(spec.get("lengths", [])) + lengths}, spf, min_frames)
        batches = []
        for b in range(spec.get("batches", 0)):
            clips = ragged(rng, spf, min_frames, spec.get("batch_seconds", 1.5))
            for junk in (False, True):
                batches.append((f"batch{b}_{'junk' if junk else 'zero'}", (*batch_tensor(rng, clips, junk), b)))
        entry.update(record(model, name, work, inputs, batches))
        entry["nemo_seconds"] = round(time.time() - t0, 2)
        entry["nemo_cpu_seconds"] = round(time.process_time() - c0, 2)
        entries.append(entry)
        print(f"  nemo {name}: {len(entry['items'])} inputs, {len(entry['rejected'])} refused, "
              f"{len(entry['batches'])} batches ({entry['nemo_seconds']:.1f} s)", flush=True)
        del model
    return entries


# ----------------------------------------------------------------------------------------------
# a user's .nemo
# ----------------------------------------------------------------------------------------------
def restore_user(path: Path):
    """NeMo's restore_from; if that fails (a training-only part such as an SLM discriminator that needs
    the hub), once more without the discriminator and datasets. Returns (model, note)."""
    try:
        model = O.restore(path)
        O.assert_state_matches(model, path)
        return model, None
    except AssertionError:
        raise
    except Exception as e:  # noqa: BLE001
        first = f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:200] if str(e).strip() else ''}"
    from nemo.collections.tts.models import AudioCodecModel
    from omegaconf import OmegaConf

    cfg = load_config(read_nemo(path)[CONFIG_NAME])
    root = cfg.get("model", cfg)
    for k in ("discriminator", "train_ds", "validation_ds", "test_ds"):
        root.pop(k, None)
    model = AudioCodecModel.restore_from(str(path), map_location="cpu", override_config_path=OmegaConf.create(cfg))
    model.eval()
    model = model.float()
    O.assert_state_matches(model, path, ignore_prefixes=("discriminator.",))
    return model, f"restored without its discriminator/datasets (first try raised {first})"


def resample(x: np.ndarray, sr: int) -> np.ndarray:
    if sr == SR:
        return x
    import soxr

    return soxr.resample(x.astype(np.float64), SR, sr, quality="HQ").astype(np.float32)


def user(work: Path, nemo: Path, seed: int) -> list[dict]:
    t0 = time.time()
    model, note = restore_user(nemo)
    sr, spf = int(model.sample_rate), int(model.samples_per_frame)
    inputs = [(n, resample(O.load_audio(n), sr)) for n in USER_INPUTS]
    clips = [resample(O.load_audio(src)[: int(s * SR) if s else None], sr) for src, s in USER_BATCH]
    rng = rng_for(seed, "user")
    batches = [(f"batch_{'junk' if j else 'zero'}", (*batch_tensor(rng, clips, j), 0)) for j in (False, True)]
    name = nemo.name[: -len(".nemo")] if nemo.name.endswith(".nemo") else nemo.name
    params = {"encoder": sum(p.numel() for p in model.audio_encoder.parameters()),
              "decoder": sum(p.numel() for p in model.audio_decoder.parameters())}
    entry = {"name": name, "nemo": str(nemo.resolve()), "variant": "user", "seed": None, "arch": None,
             "params": params, "samples_per_frame": spf, "sample_rate": sr, "restore_note": note}
    entry.update(record(model, name, work, inputs, batches))
    entry["nemo_seconds"] = round(time.time() - t0, 2)
    print(f"  nemo {name}: {len(entry['items'])} inputs, {len(entry['batches'])} batches "
          f"({entry['nemo_seconds']:.1f} s){'; ' + note if note else ''}", flush=True)
    return [entry]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="default")
    ap.add_argument("--nemo", type=Path, help="a user's .nemo instead of the seeded models")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.time()
    O.quiet_nemo()
    if args.threads:
        torch.set_num_threads(args.threads)
    import nemo.collections.tts.models  # noqa: F401  (import time reported separately)

    t_import = time.time() - t0
    args.work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="live-nemo-") as td:
        models = user(args.work, args.nemo, args.seed) if args.nemo else seeded(args.work, args.seed, args.profile, Path(td))
    plan = {"format": 1, "mode": "user" if args.nemo else "seeded", "seed": args.seed,
            "profile": None if args.nemo else args.profile, "versions": O.versions(),
            "nemo_import_seconds": round(t_import, 2), "nemo_seconds": round(time.time() - t0, 2), "models": models}
    (args.work / "plan.json").write_text(json.dumps(plan, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
