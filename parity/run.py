"""Tier 1 parity: every committed fixture model x input against NeMo's recorded outputs.

Each model is converted with our converter (derived variants first derived from the base), loaded
with `from_pretrained`, and compared under the contracts §5 rules:
- item:  encode (tokens with boundary diagnosis, latents), decode of NeMo's tokens, forward;
- batch: ragged batches, by default against NeMo item by item, with nemo_batch_compat against
  NeMo's batched call (including junk past each length).
The options a run used (dtype, threads, device) are part of its result so every fast path added
later is checked by the same suite.
"""
from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from nanocodec.convert.converter import convert
from nanocodec import AudioCodecModel

from . import compare, fixtures
from .compare import TokenReport


@dataclass(frozen=True)
class RunOptions:
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 0  # 0: torch's default
    layout: str = "auto"  # AudioCodecModel.set_conv_layout: "auto" (the fast default) or "nemo" (bitwise)

    def describe(self) -> dict:
        return {**asdict(self), "threads_used": torch.get_num_threads()}


@dataclass
class Record:
    model: str
    input: str
    kind: str  # item | batch-invariant | batch-compat
    tokens: TokenReport
    latent_rel_error: float
    audio_max_abs_error: float
    audio_snr_db: float
    forward_consistent: bool | None = None
    pesq: dict = field(default_factory=dict)
    # an input NeMo refuses: {"nemo": what NeMo raised, "ours": what we raised (None: we did not)}
    rejected: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        if self.rejected:
            return bool(self.rejected.get("nemo")) and bool(self.rejected.get("ours"))
        audio_ok = self.audio_max_abs_error <= compare.AUDIO_MAX_ABS_TOL and (
            self.audio_snr_db >= compare.AUDIO_MIN_SNR_DB or np.isinf(self.audio_snr_db)
        )
        return (
            self.tokens.unexplained == 0
            and self.latent_rel_error <= compare.LATENT_REL_TOL
            and audio_ok
            and self.forward_consistent is not False
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tokens"] = self.tokens.to_dict()
        d["ok"] = self.ok
        return d


def _t(x) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


def load_nemo(nemo: Path, out: Path, options: RunOptions) -> AudioCodecModel:
    """Convert a `.nemo` with our converter into `out` and load it."""
    convert(str(nemo), str(out), overwrite=True)
    model = AudioCodecModel.from_pretrained(out, device=options.device, dtype=getattr(torch, options.dtype))
    return model.set_conv_layout(options.layout)


def load_converted(case: fixtures.ModelCase, workdir: Path, options: RunOptions) -> AudioCodecModel:
    source = fixtures.materialize(case, workdir)
    if case.derive == fixtures.REEXPORT:
        return load_reexport(source, case.nemo, workdir / f"{case.name}-converted", options)
    return load_nemo(source, workdir / f"{case.name}-converted", options)


def load_reexport(folder: Path, nemo: Path, out: Path, options: RunOptions) -> AudioCodecModel:
    """Convert a NeMo-named safetensors folder with an explicit architecture, as `--preset` does: the
    released presets are full size, so the fixture's own (reduced-width) config is passed in."""
    from nanocodec.convert.archive import read_nemo
    from nanocodec.convert.nemo_config import config_from_yaml

    config, _ = config_from_yaml(read_nemo(nemo).config)
    report = convert(str(folder), str(out), overwrite=True, config=config)
    assert report.source_kind == "NeMo-named safetensors", report.source_kind
    model = AudioCodecModel.from_pretrained(out, device=options.device, dtype=getattr(torch, options.dtype))
    return model.set_conv_layout(options.layout)


def _audio_cmp(ours: torch.Tensor, ref: np.ndarray) -> tuple[float, float]:
    ours = ours.float().cpu().numpy().reshape(ref.shape)
    return compare.max_abs_error(ours, ref), compare.snr_db(ours, ref)


def _speech_pesq(name: str, audio_in: np.ndarray, ours: np.ndarray, nemo: np.ndarray, sr: int) -> dict:
    """PESQ of ours and of NeMo's reconstruction against the input: reported, not gated (contracts
    §5; `Record.ok` leaves it out). PESQ is not continuous in its input: on a live round's speech clip
    decoded by a random-weight model (seed 616037527, nano0p6_replicate speech_55310), NeMo's own
    output plus Gaussian noise of 1e-7 scored 1.98 instead of 1.29 against the input, so two decodes
    within 6e-7 of each other (SNR 127 dB) can differ by 0.7. The gated audio bounds carry equality."""
    if not name.startswith("speech"):
        return {}  # PESQ is meaningless on noise, tones and silence (contracts §5)
    from .metrics import pesq_wb

    n = len(audio_in)
    return {
        "ours_vs_nemo": pesq_wb(nemo[:n], ours[:n], sr),
        "input_vs_ours": pesq_wb(audio_in, ours[:n], sr),
        "input_vs_nemo": pesq_wb(audio_in, nemo[:n], sr),
    }


def compare_item(model: AudioCodecModel, model_name: str, name: str, audio: np.ndarray, ref: dict,
                 with_pesq: bool = True) -> Record:
    """One clip (batch of 1) against NeMo's recorded outputs `ref` (tokens, prerounding, tokens_len,
    latents, decoded): encode, decode of NeMo's tokens, forward == decode(encode)."""
    dev = model.device
    x = _t(audio).to(dev).unsqueeze(0)
    latents, _ = model.encode_latents(x)
    tokens = model.quantizer.encode(latents.float(), torch.tensor([latents.shape[-1]], device=dev))
    tok = compare.compare_tokens(tokens.cpu().numpy(), ref["tokens"], ref["prerounding"], ref["tokens_len"])
    lat_err = compare.latent_rel_error(latents.float().cpu().numpy(), ref["latents"])
    decoded, decoded_len = model.decode(_t(ref["tokens"]).to(dev), _t(ref["tokens_len"]).to(dev))
    err, snr = _audio_cmp(decoded, ref["decoded"])
    out = model(x)
    ours_enc = model.encode(x)
    consistent = torch.equal(out.tokens, ours_enc.tokens) and torch.equal(out.audio, model.decode(*ours_enc).audio)
    pesq = _speech_pesq(name, audio, decoded.float().cpu().numpy().ravel(), ref["decoded"].ravel(), model.sample_rate) if with_pesq else {}
    return Record(model_name, name, "item", tok, lat_err, err, snr, consistent, pesq)


def run_items(model: AudioCodecModel, case: fixtures.ModelCase, with_pesq: bool = True) -> list[Record]:
    return [compare_item(model, case.name, name, fixtures.read_input(name), fixtures.read_ref(case, name), with_pesq)
            for name in case.inputs]


def run_refusals(model: AudioCodecModel, case: fixtures.ModelCase) -> list[Record]:
    """Inputs NeMo raises on (too short for reflect padding): ours must refuse them with a clear error."""
    records = []
    for name, nemo_error in case.refused:
        try:
            model.encode(_t(fixtures.read_input(name)).to(model.device).unsqueeze(0))
            ours = None
        except ValueError as e:  # nanocodec's InvalidInputError: a clear refusal, not a crash
            lines = str(e).strip().splitlines()
            ours = f"{type(e).__name__}: {lines[-1][:300] if lines else ''}"
        records.append(Record(case.name, name, "refused", TokenReport(), 0.0, 0.0, float("inf"),
                              rejected={"nemo": nemo_error, "ours": ours}))
    return records


def compare_batch(model: AudioCodecModel, model_name: str, name: str, ref: dict) -> list[Record]:
    """One ragged batch (ref: audio, audio_len, NeMo's batched outputs and item_* outputs), both modes."""
    records = []
    dev = model.device
    audio, lens = _t(ref["audio"]).to(dev), _t(ref["audio_len"]).to(dev)
    # default: batch-invariant, each item as NeMo encodes it alone
    latents, frames = model.encode_latents(audio, lens)
    tokens = model.quantizer.encode(latents.float(), frames)
    tok = compare.compare_tokens(tokens.cpu().numpy(), ref["item_tokens"], ref["item_prerounding"], frames.cpu().numpy())
    lat_err = max(
        compare.latent_rel_error(latents[i, :, : frames[i]].float().cpu().numpy(), ref["item_latents"][i, :, : frames[i]])
        for i in range(len(lens))
    )
    decoded, _ = model.decode(_t(ref["item_tokens"]).to(dev), frames)
    err, snr = _audio_cmp(decoded, ref["item_decoded"])
    records.append(Record(model_name, name, "batch-invariant", tok, lat_err, err, snr))
    # nemo_batch_compat: NeMo's own batched call on the same tensor
    latents, frames = model.encode_latents(audio, lens, nemo_batch_compat=True)
    tokens = model.quantizer.encode(latents.float(), frames)
    tok = compare.compare_tokens(tokens.cpu().numpy(), ref["tokens"], ref["prerounding"], ref["tokens_len"])
    lat_err = compare.latent_rel_error(latents.float().cpu().numpy(), ref["latents"])
    decoded = nemo_batched_decode(model, _t(ref["tokens"]).to(dev), _t(ref["tokens_len"]).to(dev))
    err, snr = _audio_cmp(decoded, ref["decoded"])
    records.append(Record(model_name, name, "batch-compat", tok, lat_err, err, snr))
    return records


@torch.inference_mode()
def nemo_batched_decode(model: AudioCodecModel, tokens: torch.Tensor, tokens_len: torch.Tensor) -> torch.Tensor:
    """What NeMo's batched `decode` returns. A causal decoder is batch invariant, so that is `decode`; the
    non-causal HiFiGANDecoder in NeMo pads the tensor's edge and masks after every conv (a short item's
    end sees zeros, not its own edge), which the decoder's ragged_mode="mask" reproduces."""
    if model.config.decoder.causal:
        return model.decode(tokens, tokens_len).audio
    latents = model.quantizer.decode(tokens, tokens_len).to(model.dtype)
    return model.decoder(latents, tokens_len * model.samples_per_frame, ragged_mode="mask")


def run_batches(model: AudioCodecModel, case: fixtures.ModelCase) -> list[Record]:
    return [r for name in fixtures.batch_refs(case) for r in compare_batch(model, case.name, name, fixtures.read_ref(case, name))]


def run_case(case: fixtures.ModelCase, options: RunOptions = RunOptions(), with_pesq: bool = True) -> list[Record]:
    if options.threads:
        torch.set_num_threads(options.threads)
    with tempfile.TemporaryDirectory(prefix="nanocodec-parity-") as tmp:
        model = load_converted(case, Path(tmp), options)
        # a re-export holds the same weights as its .nemo: items suffice (the .nemo case runs the batches)
        batches = run_batches(model, case) if case.derive != fixtures.REEXPORT else []
        return run_items(model, case, with_pesq) + run_refusals(model, case) + batches


def verdict(records: list[Record]) -> tuple[bool, TokenReport]:
    total = TokenReport()
    for r in records:
        total = total.merge(r.tokens)
    return all(r.ok for r in records) and total.ok, total
