"""Shared NeMo-side helpers for build_fixtures.py and check_fixtures.py (run in the oracle env)."""
from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
if str(REPO / "parity" / "oracle") not in sys.path:
    sys.path.insert(0, str(REPO / "parity" / "oracle"))

FIXTURES = REPO / "tests" / "fixtures"
AUDIO_DIR = FIXTURES / "audio"
MODELS_DIR = FIXTURES / "models"
REFS_DIR = FIXTURES / "refs"
MANIFEST = FIXTURES / "manifest.json"
SR = 22050

INPUTS = [
    "speech_0p5s", "speech_4s", "speech_11s", "silence", "white_noise", "sine_sweep",
    "clipped_square", "len_1", "len_1763", "len_1764", "len_1765",
]
# speech_11s is an input of the live tier, the chunking test and the benchmarks; no model records it
# (its references were 1 MB of the 15 MB budget).
NOT_RECORDED = {"speech_11s"}
# NeMo's older codecs (non-causal HiFiGANDecoder): a few inputs each, to fit the budget. speech_4s is
# still run (calibration and the figures checked at build time) but not saved; inputs NeMo raises on
# are recorded as crashes, which our model must refuse too.
RECORDED_INPUTS = {
    "lfsc": ["speech_0p5s", "white_noise", "len_1765"],
    "audio22k": ["speech_0p5s", "white_noise", "len_1765"],
    "audio44k": ["speech_0p5s", "white_noise", "len_1765"],
}
# ragged batch items: (name, source clip, number of samples from its start or None = all).
# Short items (at most 0.3 s) and one model only: with every model's per-clip references, the
# .nemo files and the audio, that is what fits the 15 MB budget.
BATCH_ITEMS = [("speech_0p5s_first_0p25s", "speech_0p5s", 5512), ("len_1765", "len_1765", None),
               ("speech_4s_first_0p3s", "speech_4s", 6615), ("len_1", "len_1", None)]
BATCH_MODELS = ["nano0p6_replicate"]
# the reflect variant's references: a few inputs longer than 3 frames (budget, as above)
REFLECT_INPUTS = ["speech_0p5s", "white_noise", "clipped_square"]
JUNK_SEED = 777


def quiet_nemo():
    warnings.filterwarnings("ignore")
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    logging.getLogger("nemo_logger").setLevel(logging.ERROR)
    try:
        from nemo.utils import logging as nlog

        nlog.setLevel(logging.ERROR)
    except Exception:
        pass


def load_audio(name: str) -> np.ndarray:
    x, sr = sf.read(AUDIO_DIR / f"{name}.wav", dtype="float32", always_2d=False)
    assert sr == SR, (name, sr)
    return np.ascontiguousarray(x, dtype=np.float32)


def inputs_for(model_name: str) -> list[str]:
    if model_name in RECORDED_INPUTS:
        return list(RECORDED_INPUTS[model_name])
    return [n for n in INPUTS if n not in NOT_RECORDED]


def num_frames(n: int, spf: int) -> int:
    return -(-n // spf)


def prerounding(model, latents: torch.Tensor) -> torch.Tensor:
    """NeMo's FSQ pre-rounding values output_scale*tanh(x+shift)-offset, latent channel order."""
    vq = model.vector_quantizer
    groups = latents.chunk(vq.num_groups, dim=1)
    outs = [fsq.compress(inputs=g, input_len=None) for fsq, g in zip(vq.fsqs, groups)]
    return torch.cat(outs, dim=1).float()


@torch.no_grad()
def nemo_calls(model, audio: torch.Tensor, audio_len: torch.Tensor):
    """NeMo's encode, encode_audio and decode on one batch, checking forward == decode(encode)."""
    tokens, tokens_len = model.encode(audio=audio, audio_len=audio_len)
    latents, latents_len = model.encode_audio(audio=audio, audio_len=audio_len)
    assert torch.equal(latents_len, tokens_len)
    decoded, decoded_len = model.decode(tokens=tokens, tokens_len=tokens_len)
    fwd, fwd_len = model(audio=audio, audio_len=audio_len)
    assert torch.equal(fwd, decoded) and torch.equal(fwd_len, decoded_len), "forward != decode(encode)"
    return tokens, tokens_len, latents, decoded, decoded_len


@torch.no_grad()
def run_single(model, x: np.ndarray) -> dict[str, torch.Tensor]:
    """All recorded outputs for one clip (batch of 1, full length)."""
    audio = torch.from_numpy(x)[None, :]
    audio_len = torch.tensor([x.shape[0]], dtype=torch.int64)
    tokens, tokens_len, latents, decoded, decoded_len = nemo_calls(model, audio, audio_len)
    return {
        "tokens": tokens.to(torch.int32).contiguous(),
        "tokens_len": tokens_len.to(torch.int64).contiguous(),
        "latents": latents.float().contiguous(),
        "prerounding": prerounding(model, latents).contiguous(),
        "decoded": decoded.float().contiguous(),
        "decoded_len": decoded_len.to(torch.int64).contiguous(),
    }


def batch_audio(junk: bool):
    """[B,T] float32 tensor and int64 lengths for the ragged batch (zero or junk past each length)."""
    clips = []
    for _, src, n in BATCH_ITEMS:
        x = load_audio(src)
        clips.append(x[:n] if n else x)
    lens = [len(c) for c in clips]
    T = max(lens)
    if junk:
        g = torch.Generator().manual_seed(JUNK_SEED)
        audio = (torch.rand((len(clips), T), generator=g, dtype=torch.float32) * 2 - 1) * 0.5
    else:
        audio = torch.zeros((len(clips), T), dtype=torch.float32)
    for i, c in enumerate(clips):
        audio[i, : len(c)] = torch.from_numpy(c)
    return audio.contiguous(), torch.tensor(lens, dtype=torch.int64)


def _pad_to(t: torch.Tensor, n: int) -> torch.Tensor:
    return torch.nn.functional.pad(t, (0, n - t.shape[-1]))


@torch.no_grad()
def run_batch(model, audio: torch.Tensor, audio_len: torch.Tensor, items: dict | None = None) -> dict[str, torch.Tensor]:
    """NeMo's batched call plus each item alone (item_*). items: the item_* of an earlier run_batch on
    the same items (the same audio up to each length: only the padding differs), reused as they are."""
    spf = model.samples_per_frame
    tokens, tokens_len, latents, decoded, decoded_len = nemo_calls(model, audio, audio_len)
    fmax = tokens.shape[-1]
    it_tok, it_lat, it_pre, it_dec = [], [], [], []
    if items is not None:
        assert items["item_tokens"].shape[-1] == fmax
        it_tok, it_lat, it_pre, it_dec = (list(items[k]) for k in ("item_tokens", "item_latents", "item_prerounding", "item_decoded"))
    for i in range(audio.shape[0] if items is None else 0):
        r = run_single(model, audio[i, : int(audio_len[i])].numpy().copy())
        it_tok.append(_pad_to(r["tokens"][0], fmax))
        it_lat.append(_pad_to(r["latents"][0], fmax))
        it_pre.append(_pad_to(r["prerounding"][0], fmax))
        it_dec.append(_pad_to(r["decoded"][0], fmax * spf))
    return {
        "audio": audio.contiguous(),
        "audio_len": audio_len.contiguous(),
        "tokens": tokens.to(torch.int32).contiguous(),
        "tokens_len": tokens_len.to(torch.int64).contiguous(),
        "latents": latents.float().contiguous(),
        "prerounding": prerounding(model, latents).contiguous(),
        "decoded": decoded.float().contiguous(),
        "decoded_len": decoded_len.to(torch.int64).contiguous(),
        "item_tokens": torch.stack(it_tok).to(torch.int32).contiguous(),
        "item_latents": torch.stack(it_lat).contiguous(),
        "item_prerounding": torch.stack(it_pre).contiguous(),
        "item_decoded": torch.stack(it_dec).contiguous(),
    }


def restore(path):
    from nemo.collections.tts.models import AudioCodecModel

    m = AudioCodecModel.restore_from(str(path), map_location="cpu")
    m.eval()
    return m.float()


def file_state(path) -> dict:
    from derive import WEIGHTS_NAME, load_weights, read_nemo

    return load_weights(read_nemo(path)[WEIGHTS_NAME])


def assert_state_matches(model, path, ignore_prefixes: tuple = ()):
    """restore_from loads with strict=False: compare the restored state dict with the file's ourselves
    (legacy weight_g/weight_v names are mapped to the parametrization names; keys under
    ignore_prefixes, e.g. a discriminator left out of the restore, are skipped on both sides)."""
    from derive import _NEW_G, _NEW_V

    fs = {}
    for k, v in file_state(path).items():
        if k.endswith(".weight_g"):
            k = k[: -len(".weight_g")] + _NEW_G
        elif k.endswith(".weight_v"):
            k = k[: -len(".weight_v")] + _NEW_V
        fs[k] = v
    ms = model.state_dict()
    if ignore_prefixes:
        fs = {k: v for k, v in fs.items() if not k.startswith(ignore_prefixes)}
        ms = {k: v for k, v in ms.items() if not k.startswith(ignore_prefixes)}
    assert set(ms) == set(fs), (sorted(set(ms) ^ set(fs)))[:10]
    for k in ms:
        assert ms[k].dtype == fs[k].dtype and torch.equal(ms[k], fs[k]), k


def versions() -> dict:
    import platform

    import nemo

    from parity.machine import cpu_name

    return {
        "nemo": nemo.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
    }
