"""Model configuration: one dataclass per part, serialised as `config.json` (contracts §2).

Field names and defaults are those of NeMo 3.0.0's constructors (`HiFiGANEncoder`,
`GroupFiniteScalarQuantizer`, `CausalHiFiGANDecoder`), so a NeMo yaml maps onto them key for key
and an absent key means NeMo's class default.

`decoder.causal` (not a NeMo argument) says which NeMo decoder class it is: true (the default, and
every NanoCodec) `CausalHiFiGANDecoder`, false `HiFiGANDecoder` (NeMo's older codecs: LFSC, the
22/44 kHz audio codecs), whose own class defaults differ (`pad_mode: reflect`,
`n_groups_equal_to_out_channels: false`; the converter writes them out). The field was added
without a format_version change: it is written into config.json only when false, so every
existing config.json (and its sha256, which token files carry) reads and hashes exactly as
before, and an older nanocodec refuses a non-causal config by its unknown key instead of
misreading it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

from .errors import CheckpointError

MODEL_TYPE = "nanocodec"
FORMAT_VERSION = 1

PAD_MODES = ("reflect", "replicate", "zeros")
ACTIVATIONS = ("lrelu", "elu", "snake", "half_snake")
OUTPUT_ACTIVATIONS = ("clamp", "tanh")
# Bounds far past any real codec, so that a hostile config cannot make tensor sizes overflow.
MAX_INT = 1 << 20
MAX_LIST = 32
MAX_CHANNELS = 1 << 16


@dataclass
class EncoderConfig:
    """Non-causal HiFi-GAN encoder (NeMo `HiFiGANEncoder`)."""

    encoded_dim: int
    down_sample_rates: list[int] = field(default_factory=lambda: [2, 2, 8, 8])
    base_channels: int = 32
    in_kernel_size: int = 7
    out_kernel_size: int = 7
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[int] = field(default_factory=lambda: [1, 3, 5])
    activation: str = "lrelu"
    pad_mode: str = "reflect"


@dataclass
class QuantizerConfig:
    """Grouped finite scalar quantizer (NeMo `GroupFiniteScalarQuantizer`)."""

    num_groups: int
    num_levels_per_group: list[int]
    eps: float = 1e-3

    @property
    def codebook_size(self) -> int:
        return math.prod(self.num_levels_per_group)

    @property
    def dim(self) -> int:
        return self.num_groups * len(self.num_levels_per_group)


@dataclass
class DecoderConfig:
    """HiFi-GAN decoder: NeMo `CausalHiFiGANDecoder` (causal, the default) or `HiFiGANDecoder`."""

    input_dim: int
    up_sample_rates: list[int] = field(default_factory=lambda: [8, 8, 2, 2])
    base_channels: int = 512
    in_kernel_size: int = 7
    out_kernel_size: int = 3
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[int] = field(default_factory=lambda: [1, 3, 5])
    activation: str = "lrelu"
    output_activation: str = "tanh"
    pad_mode: str = "zeros"
    n_groups_equal_to_out_channels: bool = True
    causal: bool = True

    @property
    def nemo_class(self) -> str:
        return "CausalHiFiGANDecoder" if self.causal else "HiFiGANDecoder"


# NeMo 3.0.0's HiFiGANDecoder defaults where they differ from CausalHiFiGANDecoder's.
NONCAUSAL_DECODER_DEFAULTS = {"pad_mode": "reflect", "n_groups_equal_to_out_channels": False}


@dataclass
class NanoCodecConfig:
    sample_rate: int
    samples_per_frame: int
    encoder: EncoderConfig
    quantizer: QuantizerConfig
    decoder: DecoderConfig
    output_sample_rate: int | None = None  # NeMo: defaults to sample_rate

    def __post_init__(self):
        if self.output_sample_rate is None:
            self.output_sample_rate = self.sample_rate
        self.validate()

    # ---- derived facts -------------------------------------------------------------
    @property
    def num_codebooks(self) -> int:
        return self.quantizer.num_groups

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.samples_per_frame

    @property
    def bitrate(self) -> float:
        return self.frame_rate * self.num_codebooks * math.log2(self.codebook_size)

    # ---- validation ----------------------------------------------------------------
    def validate(self) -> None:
        enc, q, dec = self.encoder, self.quantizer, self.decoder

        def bad(key, why):
            raise CheckpointError(f"config.json: '{key}' is impossible: {why}. Re-convert the checkpoint.")

        _positive_ints(bad, "sample_rate", [self.sample_rate])
        _positive_ints(bad, "samples_per_frame", [self.samples_per_frame])
        _positive_ints(bad, "output_sample_rate", [self.output_sample_rate])
        for prefix, part in (("encoder", enc), ("decoder", dec)):
            for name in ("resblock_kernel_sizes", "resblock_dilation_sizes"):
                _positive_ints(bad, f"{prefix}.{name}", getattr(part, name), nonempty=True)
            _positive_ints(bad, f"{prefix}.in_kernel_size", [part.in_kernel_size])
            _positive_ints(bad, f"{prefix}.out_kernel_size", [part.out_kernel_size])
            _positive_ints(bad, f"{prefix}.base_channels", [part.base_channels])
            if part.activation not in ACTIVATIONS:
                bad(f"{prefix}.activation", f"{part.activation!r} is not one of {ACTIVATIONS}")
            if part.pad_mode not in PAD_MODES:
                bad(f"{prefix}.pad_mode", f"{part.pad_mode!r} is not one of {PAD_MODES}")
        _positive_ints(bad, "encoder.down_sample_rates", enc.down_sample_rates, nonempty=True)
        _positive_ints(bad, "decoder.up_sample_rates", dec.up_sample_rates, nonempty=True)
        _positive_ints(bad, "quantizer.num_levels_per_group", q.num_levels_per_group, nonempty=True)
        _positive_ints(bad, "quantizer.num_groups", [q.num_groups])
        if any(n < 2 for n in q.num_levels_per_group):
            bad("quantizer.num_levels_per_group", "every dimension needs at least 2 levels")
        if q.codebook_size > 2**31 - 1:
            bad("quantizer.num_levels_per_group", "the codebook does not fit int32 token ids")
        if isinstance(q.eps, bool) or not isinstance(q.eps, (int, float)) or not (0.0 <= q.eps < 1.0):
            bad("quantizer.eps", f"{q.eps!r} is not a number in [0, 1)")
        if not isinstance(dec.causal, bool):
            bad("decoder.causal", f"{dec.causal!r} is not true or false")
        if not isinstance(dec.n_groups_equal_to_out_channels, bool):
            bad("decoder.n_groups_equal_to_out_channels", f"{dec.n_groups_equal_to_out_channels!r} is not true or false")
        for key, width in (("encoder.base_channels", enc.base_channels * 2 ** len(enc.down_sample_rates)),
                           ("decoder.base_channels", dec.base_channels)):
            if width > MAX_CHANNELS:
                bad(key, f"it gives {width} channels, more than {MAX_CHANNELS}")
        if math.prod(enc.down_sample_rates) != self.samples_per_frame:
            bad("encoder.down_sample_rates", f"their product must equal samples_per_frame={self.samples_per_frame}")
        if math.prod(dec.up_sample_rates) != self.samples_per_frame:
            bad("decoder.up_sample_rates", f"their product must equal samples_per_frame={self.samples_per_frame}")
        if enc.encoded_dim != q.dim:
            bad("encoder.encoded_dim", f"{enc.encoded_dim} != quantizer groups x dims per group = {q.dim}")
        if dec.input_dim != q.dim:
            bad("decoder.input_dim", f"{dec.input_dim} != quantizer groups x dims per group = {q.dim}")
        if dec.base_channels % (2 ** len(dec.up_sample_rates)) != 0:
            bad("decoder.base_channels", f"must be divisible by 2**{len(dec.up_sample_rates)} (halved per stage)")
        if dec.output_activation not in OUTPUT_ACTIVATIONS:
            bad("decoder.output_activation", f"{dec.output_activation!r} is not one of {OUTPUT_ACTIVATIONS}")

    # ---- (de)serialisation ---------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"model_type": MODEL_TYPE, "format_version": FORMAT_VERSION}
        d.update(dataclasses.asdict(self))
        if d["decoder"]["causal"]:
            del d["decoder"]["causal"]  # the default: config.json and sha256 as before the field existed
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def sha256(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_dict(cls, d: dict) -> "NanoCodecConfig":
        if not isinstance(d, dict):
            raise CheckpointError("config.json must hold a JSON object")
        d = dict(d)
        if d.pop("model_type", None) != MODEL_TYPE:
            raise CheckpointError(f"config.json: 'model_type' must be {MODEL_TYPE!r}; this is not a nanocodec model")
        version = d.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"config.json: 'format_version' is {version!r}, this nanocodec reads {FORMAT_VERSION}; "
                "upgrade nanocodec or re-convert the checkpoint"
            )
        parts = {}
        for key, part_cls in (("encoder", EncoderConfig), ("quantizer", QuantizerConfig), ("decoder", DecoderConfig)):
            if key not in d:
                raise CheckpointError(f"config.json: missing key '{key}'")
            parts[key] = _build(part_cls, d.pop(key), key)
        return _build(cls, {**d, **parts}, "")

    @classmethod
    def from_json(cls, text: str) -> "NanoCodecConfig":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"config.json is not valid JSON: {e}") from None
        return cls.from_dict(d)


def _positive_ints(bad, key, values, nonempty=False):
    values = list(values) if isinstance(values, (list, tuple)) else values
    if not isinstance(values, list) or (nonempty and not values):
        bad(key, "expected a non-empty list of positive integers")
    if len(values) > MAX_LIST:
        bad(key, f"{len(values)} entries, more than {MAX_LIST}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            bad(key, f"{v!r} is not a positive integer")
        if v > MAX_INT:
            bad(key, f"{v} is larger than {MAX_INT}")


def _build(part_cls, values, prefix):
    if not isinstance(values, dict):
        raise CheckpointError(f"config.json: '{prefix}' must be an object")
    names = {f.name for f in dataclasses.fields(part_cls)}
    for key in values:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else key
            raise CheckpointError(f"config.json: unknown key '{where}' (not a {part_cls.__name__} field)")
    try:
        return part_cls(**values)
    except TypeError as e:
        raise CheckpointError(f"config.json: {prefix or 'top level'}: {e}") from None
