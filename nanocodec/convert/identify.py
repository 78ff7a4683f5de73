"""Which preset a bare NeMo-named state dict is (the PyPI port's re-export carries no architecture),
from its tensor shapes alone: contracts §1 (c) and §3.

The shapes are read from the safetensors headers (no tensor data), mapped to nanocodec's names by the
converter's own key map (a weight-norm pair counts as the folded weight, of `v`'s shape) and compared
with every preset's model built on the meta device (no memory). What shapes cannot tell apart (the
encoder's padding mode, for one) is the preset's stated assumption, and the converter's report says so.
"""
from __future__ import annotations

import functools

from nanocodec.config import NanoCodecConfig
from nanocodec.errors import CheckpointError
from nanocodec.presets import PRESETS, Preset

from .keymap import drop_rule, target_name, weight_norm_part

Shapes = dict[str, tuple[int, ...]]


def folded_shapes(nemo_shapes: Shapes) -> tuple[Shapes, list[str]]:
    """-> (our name -> shape, NeMo names no rule knows). Dropped tensors (FSQ constants, training-only
    parts) do not count: presets differ in the inference graph only."""
    ours: Shapes = {}
    unknown = []
    for key, shape in nemo_shapes.items():
        mapped = target_name(key)
        if mapped is None:
            if drop_rule(key) is None:
                unknown.append(key)
            continue
        part = weight_norm_part(mapped[0])
        if part is None:
            ours[mapped[0]] = tuple(shape)
        elif part[1] == "v":
            ours[part[0] + ".weight"] = tuple(shape)
    return ours, sorted(unknown)


def model_shapes(config: NanoCodecConfig) -> Shapes:
    """The state-dict shapes of nanocodec's model for `config` (built on the meta device)."""
    return dict(_model_shapes_json(config.to_json()))


@functools.lru_cache(maxsize=32)
def _model_shapes_json(config_json: str) -> tuple:
    import torch

    from nanocodec import AudioCodecModel

    with torch.device("meta"):
        model = AudioCodecModel(NanoCodecConfig.from_json(config_json))
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def _differences(ours: Shapes, expected: Shapes) -> list[str]:
    diffs = [f"{k}: {list(ours[k])} vs {list(v)}" for k, v in expected.items() if k in ours and ours[k] != v]
    diffs += [f"{k} missing" for k in expected if k not in ours]
    diffs += [f"{k} unexpected" for k in ours if k not in expected]
    return diffs


def identify(nemo_shapes: Shapes, *, sample_rate: int | None = None, source: str = "the weights",
             presets: dict[str, Preset] | None = None) -> Preset:
    """The one preset whose architecture has exactly these tensor shapes (and, when the source says
    its sample rate, that rate); CheckpointError naming the candidates when none or several fit."""
    presets = PRESETS if presets is None else presets
    ours, unknown = folded_shapes(nemo_shapes)
    hint = f"name the architecture with preset= (--preset): one of {', '.join(presets)}, or a NanoCodecConfig"
    if unknown:
        raise CheckpointError(f"{source}: {len(unknown)} tensors match no NeMo codec name (e.g. {unknown[:3]}); "
                              f"this is not a NeMo codec's state dict. If it is one, {hint}")
    if not ours:
        raise CheckpointError(f"{source}: no encoder or decoder tensors under NeMo's names; nothing to identify")
    fits, closest = [], None
    for preset in presets.values():
        diffs = _differences(ours, model_shapes(preset.config()))
        if not diffs:
            fits.append(preset)
        elif closest is None or len(diffs) < len(closest[1]):
            closest = (preset, diffs)
    if sample_rate is not None:
        same_rate = [p for p in fits if p.sample_rate == sample_rate]
        if fits and not same_rate:
            raise CheckpointError(
                f"{source}: the tensor shapes are those of {', '.join(p.name for p in fits)}, but its config.json says "
                f"sample_rate {sample_rate}; {hint}")
        fits = same_rate
    if len(fits) == 1:
        return fits[0]
    if fits:
        raise CheckpointError(
            f"{source}: the tensor shapes fit several presets: {', '.join(p.name for p in fits)}; they differ in what "
            f"shapes cannot show; {hint}")
    where = ""
    if closest:
        where = f" (closest: {closest[0].name}, {len(closest[1])} tensors differ, e.g. {'; '.join(closest[1][:2])})"
    raise CheckpointError(f"{source}: the tensor shapes fit none of the presets{where}. For a reduced or custom "
                          f"model, {hint}")
