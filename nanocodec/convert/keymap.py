"""NeMo state-dict names -> nanocodec names, and the explicit rules for what is dropped.

Every tensor of the checkpoint is either mapped by one rule of MAP_RULES, or dropped by one rule
of DROP_RULES, or it is an error. Weight-norm pairs (new `parametrizations.weight.original0/1`
or legacy `weight_g/weight_v`) are folded exactly as NeMo computes them every forward:
`torch._weight_norm(v, g, 0)`, in the checkpoint's dtype.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import torch

from nanocodec.config import NanoCodecConfig
from nanocodec.errors import CheckpointError

_CONV_LEAF = r"(?P<leaf>bias|weight|parametrizations\.weight\.original0|parametrizations\.weight\.original1|weight_g|weight_v)"
_ALPHA = r"activation(?:\.snake_act)?\.alpha"
_UNIT = r"res_layers\.(?P<i>\d+)\.res_blocks\.(?P<j>\d+)\.res_blocks\.(?P<m>\d+)"

# (name, NeMo pattern, our name template)
MAP_RULES: list[tuple[str, re.Pattern, str]] = [
    (name, re.compile(pattern), template)
    for name, pattern, template in [
        ("conv", rf"audio_(?P<part>encoder|decoder)\.(?P<conv>pre_conv|post_conv)\.conv\.{_CONV_LEAF}", "{part}.{conv}.{leaf}"),
        ("conv", rf"audio_encoder\.down_sample_conv_layers\.(?P<i>\d+)\.conv\.{_CONV_LEAF}", "encoder.down_convs.{i}.{leaf}"),
        ("conv", rf"audio_decoder\.up_sample_conv_layers\.(?P<i>\d+)\.conv\.{_CONV_LEAF}", "decoder.up_convs.{i}.{leaf}"),
        ("conv", rf"audio_(?P<part>encoder|decoder)\.{_UNIT}\.(?P<which>input|skip)_conv\.conv\.{_CONV_LEAF}",
         "{part}.res_layers.{i}.blocks.{j}.units.{m}.{which}_conv.{leaf}"),
        ("alpha", rf"audio_(?P<part>encoder|decoder)\.activations\.(?P<i>\d+)\.{_ALPHA}", "{part}.activations.{i}.alpha"),
        ("alpha", rf"audio_(?P<part>encoder|decoder)\.post_activation\.{_ALPHA}", "{part}.post_activation.alpha"),
        ("alpha", rf"audio_(?P<part>encoder|decoder)\.{_UNIT}\.(?P<which>input|skip)_activation\.{_ALPHA}",
         "{part}.res_layers.{i}.blocks.{j}.units.{m}.{which}_activation.alpha"),
    ]
]

# (rule name, NeMo pattern, why it is dropped)
DROP_RULES: list[tuple[str, re.Pattern, str]] = [
    (name, re.compile(pattern), why)
    for name, pattern, why in [
        ("fsq-constants", r"vector_quantizer\.fsqs\.\d+\.(dim_base_index|num_levels)",
         "FSQ constants, recomputed from the config (checked equal first)"),
        ("discriminator", r"discriminator\..+", "training-only discriminator"),
        ("loss-buffers", r"(mel_loss_fn|stft_loss_fn)\..+", "training-only loss buffers (mel filterbanks, windows)"),
        ("training-only", r"(speaker_encoder|slm_encoder|slm_predictor)\..+", "training-only auxiliary models"),
    ]
]

_G = ("parametrizations.weight.original0", "weight_g")
_V = ("parametrizations.weight.original1", "weight_v")


@dataclass
class Mapping:
    state_dict: dict[str, torch.Tensor]
    mapped: Counter = field(default_factory=Counter)  # rule -> NeMo tensors mapped
    dropped: Counter = field(default_factory=Counter)  # rule -> NeMo tensors dropped
    folded: int = 0
    nemo_inference_params: int = 0  # parameters as NeMo counts them (g and v separately)


def _check_fsq_constants(state: dict, config: NanoCodecConfig) -> None:
    levels = config.quantizer.num_levels_per_group
    base = [1]
    for n in levels[:-1]:
        base.append(base[-1] * n)
    for key, tensor in state.items():
        m = re.fullmatch(r"vector_quantizer\.fsqs\.(\d+)\.(dim_base_index|num_levels)", key)
        if not m:
            continue
        if int(m.group(1)) >= config.quantizer.num_groups:
            raise CheckpointError(f"{key}: the config has only {config.quantizer.num_groups} quantizer groups")
        expected = levels if m.group(2) == "num_levels" else base
        if tensor.flatten().tolist() != expected:
            raise CheckpointError(f"{key} = {tensor.flatten().tolist()} disagrees with the config's {expected}")


def target_name(key: str) -> tuple[str, str] | None:
    """(our name, map rule) for a NeMo tensor name, or None when no map rule takes it. A weight-norm
    pair keeps its NeMo leaf (`...original0` / `weight_g`, `...original1` / `weight_v`) for folding."""
    for rule, pattern, template in MAP_RULES:
        m = pattern.fullmatch(key)
        if m:
            return template.format(**m.groupdict()), rule
    return None


def drop_rule(key: str) -> str | None:
    """The DROP_RULES rule that drops this NeMo tensor name, or None."""
    for rule, pattern, _why in DROP_RULES:
        if pattern.fullmatch(key):
            return rule
    return None


def weight_norm_part(target: str) -> tuple[str, str] | None:
    """(conv stem, "g" or "v") for a weight-norm tensor's mapped name, else None."""
    for suffix in _G + _V:
        if target.endswith("." + suffix):
            return target[: -len(suffix) - 1], "g" if suffix in _G else "v"
    return None


def map_state_dict(nemo_state: dict[str, torch.Tensor], config: NanoCodecConfig) -> Mapping:
    """Consumes `nemo_state` (tensors are popped as they are mapped, so that folding a
    full-size checkpoint never holds two copies of it)."""
    _check_fsq_constants(nemo_state, config)
    result = Mapping({})
    pending: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    unknown = []
    for key in sorted(nemo_state):
        tensor = nemo_state.pop(key)
        mapped = target_name(key)
        if mapped is None:
            dropped = drop_rule(key)
            if dropped:
                result.dropped[dropped] += 1
            else:
                unknown.append(key)
            continue
        target, rule = mapped
        result.mapped[rule] += 1
        result.nemo_inference_params += tensor.numel()
        part = weight_norm_part(target)
        if part:
            pending[part[0]][part[1]] = tensor
        else:
            if target in result.state_dict:
                raise CheckpointError(f"{key}: a second tensor for {target}")
            result.state_dict[target] = tensor
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} checkpoint tensors match no mapping or drop rule (e.g. {unknown[:3]}); "
            "this is not a NanoCodec nanocodec understands"
        )
    for stem in sorted(pending):
        pair = pending.pop(stem)
        if set(pair) != {"g", "v"} or stem + ".weight" in result.state_dict:
            raise CheckpointError(f"{stem}: weight norm needs exactly one g and one v tensor, got {sorted(pair)}")
        g, v = pair["g"], pair["v"]
        if g.dim() != v.dim() or g.shape[0] != v.shape[0] or g.numel() != v.shape[0]:
            raise CheckpointError(f"{stem}: weight-norm g {list(g.shape)} does not fit v {list(v.shape)}")
        if not (g.dtype.is_floating_point and v.dtype == g.dtype):
            raise CheckpointError(f"{stem}: weight-norm g/v must share a floating dtype, got {g.dtype}/{v.dtype}")
        # NeMo's parametrization recomputes exactly this every forward, in the stored dtype.
        result.state_dict[stem + ".weight"] = torch._weight_norm(v, g, 0)
        result.folded += 1
    return result
