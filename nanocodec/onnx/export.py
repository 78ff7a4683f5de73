"""`export_onnx(model, out_dir)`: a model as ONNX graphs plus `onnx_config.json` (contracts §9).

Exported from the reference (NCW) model with the TorchScript exporter (`dynamo=False`): the dynamo
exporter took 551 s per graph on this model (issue 22) and the default channels-last backend does
not trace. Opset 17: the newest the TorchScript exporter targets well, and every op used here
(Pad reflect/edge, Round half-to-even, GatherElements, integer Div/Mod) exists in it unchanged; ONNX
Runtime and OpenVINO both run it.

Every graph has dynamic batch and length axes. The encoder pads to whole frames itself and encodes
ragged batches batch-invariantly; the decoder decodes them batch-invariantly; `decoder_step.onnx`
(causal decoders) takes and returns the decoder's named state (`state_in.<module>` ->
`state_out.<module>`, each float32 [B, C, L]).
"""
from __future__ import annotations

import contextlib
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InvalidInputError
from ..fileio import atomic
from . import layout
from .graphs import DecoderGraph, DecoderStepGraph, EncoderGraph, export_copy


@dataclass
class ExportReport:
    out_dir: Path
    files: list[str]
    seconds: dict[str, float] = field(default_factory=dict)  # per graph: export + onnx.checker

    def summary(self) -> str:
        times = ", ".join(f"{name} {s:.1f} s" for name, s in self.seconds.items())
        return f"exported {', '.join(self.files)} ({times})"


def _min_frames(model) -> dict[str, int]:
    """The fewest frames per item each graph computes correctly (reflect padding needs its input
    longer than the padding; NeMo itself fails on fewer). 1 where nothing is reflect-padded."""
    from ..model import min_reflect_frames

    encoder = min_reflect_frames(model) if model.config.encoder.pad_mode == "reflect" else 1
    decoder = 1 if model.config.decoder.causal else model.decoder.min_frames()
    return {"encoder": encoder, "decoder": decoder}


def _io(name: str, dtype: str, shape: list) -> dict:
    return {"name": name, "dtype": dtype, "shape": shape}


@contextlib.contextmanager
def _one_torch_thread():
    """Tracing runs the model on tiny inputs: on a busy machine several intra-op threads only
    spin-wait (measured 14 s of conv time per graph with 2 threads under load, 0.4 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _export_graph(module, args, path: Path, inputs, outputs, dynamic_axes, opset: int) -> None:
    import onnx

    with warnings.catch_warnings():
        # chosen on purpose (module docstring), and said once per graph
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        # strided slices are left to the runtime: nothing to fold
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
        # the time axis' memory-layout test (channels-last or not): either branch concatenates the
        # same values, so a layout fixed at trace time changes no result
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"nanocodec\.nn\.time_axis")
        if isinstance(module, DecoderGraph):
            # the non-causal decoder's Python checks of the example's lengths (its reflect minimum
            # and the ragged branch): decided at trace time on purpose (DecoderGraph)
            warnings.filterwarnings("ignore", message="Converting a tensor to a Python", category=torch.jit.TracerWarning)
        torch.onnx.export(module, args, str(path), input_names=list(inputs), output_names=list(outputs),
                          dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False)
    onnx.checker.check_model(str(path), full_check=True)


def _example_lengths(min_frames: int) -> list[int]:
    """Two different frame counts: the traced branches are the ragged ones (graphs.DecoderGraph)."""
    n = max(2, min_frames)
    return [n + 1, n]


def export_onnx(model, out_dir, *, opset: int = layout.DEFAULT_OPSET, overwrite: bool = False,
                progress: bool = True) -> ExportReport:
    """Write `encoder.onnx`, `decoder.onnx`, `decoder_step.onnx` (causal decoders only) and
    `onnx_config.json` into `out_dir` (atomically: a temporary sibling, fsync, rename).

    `model`: an `AudioCodecModel` (left unchanged) or anything `AudioCodecModel.from_pretrained`
    takes. Float32 graphs only, whatever the model's dtype and device."""
    import onnx
    from tqdm import tqdm

    from ..model import AudioCodecModel
    from ..precision import precision_scope

    if isinstance(opset, bool) or not isinstance(opset, int) or not 14 <= opset <= 20:
        raise InvalidInputError(f"opset must be an integer in 14..20 (default {layout.DEFAULT_OPSET}); got {opset!r}")
    if not isinstance(model, AudioCodecModel):
        model = AudioCodecModel.from_pretrained(model, backend="reference")
    net = export_copy(model)
    cfg = net.config
    spf, groups = cfg.samples_per_frame, cfg.num_codebooks
    min_frames = _min_frames(net)
    causal = cfg.decoder.causal
    state_spec = net.decoder.state_spec() if causal else {}
    graphs = {}

    # ---- the example inputs tracing runs on (small: tracing is what costs, not the inputs) ----
    enc_frames = _example_lengths(min_frames["encoder"])
    audio_len = torch.tensor([enc_frames[0] * spf, enc_frames[1] * spf - spf // 3])
    audio = 0.1 * torch.randn(2, 1, int(audio_len.max()), generator=torch.Generator().manual_seed(0))
    graphs["encoder"] = (
        EncoderGraph(net), (audio, audio_len), layout.ENCODER_FILE, layout.ENCODER_INPUTS, layout.ENCODER_OUTPUTS,
        {"audio": {0: "batch", 2: "samples"}, "audio_len": {0: "batch"}, "tokens": {0: "batch", 2: "frames"},
         "tokens_len": {0: "batch"}},
    )
    dec_frames = _example_lengths(min_frames["decoder"])
    tokens = torch.zeros(2, groups, dec_frames[0], dtype=torch.int32)
    graphs["decoder"] = (
        DecoderGraph(net), (tokens, torch.tensor(dec_frames)), layout.DECODER_FILE, layout.DECODER_INPUTS,
        layout.DECODER_OUTPUTS,
        {"tokens": {0: "batch", 2: "frames"}, "tokens_len": {0: "batch"}, "audio": {0: "batch", 2: "samples"},
         "audio_len": {0: "batch"}},
    )
    if causal:
        names = list(state_spec)
        state_in = tuple(net.decoder.init_state(2).values())
        ins = [layout.STEP_TOKENS] + [layout.STATE_IN + n for n in names]
        outs = [layout.STEP_AUDIO] + [layout.STATE_OUT + n for n in names]
        axes = {layout.STEP_TOKENS: {0: "batch", 2: "frames"}, layout.STEP_AUDIO: {0: "batch", 2: "samples"}}
        axes.update({n: {0: "batch"} for n in ins[1:] + outs[1:]})
        graphs["decoder_step"] = (DecoderStepGraph(net, names), (tokens[..., :2], *state_in), layout.DECODER_STEP_FILE,
                                  ins, outs, axes)

    config = {
        "format": layout.FORMAT,
        "format_version": layout.FORMAT_VERSION,
        "config": cfg.to_dict(),
        "config_sha256": cfg.sha256(),
        "opset": opset,
        "exporter": {"torch": torch.__version__.split("+")[0], "onnx": onnx.__version__, "kind": "torchscript",
                     "backend": "reference", "dtype": "float32"},
        "sample_rate": cfg.sample_rate,
        "samples_per_frame": spf,
        "num_codebooks": groups,
        "codebook_size": cfg.codebook_size,
        "causal_decoder": causal,
        "min_frames": min_frames,
        "graphs": {
            "encoder": {"file": layout.ENCODER_FILE,
                        "inputs": [_io("audio", "float32", ["batch", 1, "samples"]), _io("audio_len", "int64", ["batch"])],
                        "outputs": [_io("tokens", "int32", ["batch", groups, "frames"]), _io("tokens_len", "int64", ["batch"])]},
            "decoder": {"file": layout.DECODER_FILE,
                        "inputs": [_io("tokens", "int32", ["batch", groups, "frames"]), _io("tokens_len", "int64", ["batch"])],
                        "outputs": [_io("audio", "float32", ["batch", 1, f"frames*{spf}"]), _io("audio_len", "int64", ["batch"])]},
        },
        "state": [
            {"name": name, "input": layout.STATE_IN + name, "output": layout.STATE_OUT + name,
             "shape": ["batch", c, n], "dtype": "float32"}
            for name, (c, n) in state_spec.items()
        ],
    }
    if causal:  # then state_in.<name> / state_out.<name> for each entry of config["state"], in order
        config["graphs"]["decoder_step"] = {
            "file": layout.DECODER_STEP_FILE,
            "inputs": [_io("tokens", "int32", ["batch", groups, "frames"])],
            "outputs": [_io("audio", "float32", ["batch", 1, f"frames*{spf}"])],
            "state": True,
        }
    report = ExportReport(Path(out_dir), [g[2] for g in graphs.values()] + [layout.CONFIG_FILE])

    def fill(tmp: Path) -> None:
        bar = tqdm(graphs.items(), desc="export onnx", unit="graph", disable=not progress)
        for name, (module, args, file, ins, outs, axes) in bar:
            bar.set_postfix_str(file)
            start = time.perf_counter()
            _export_graph(module, args, tmp / file, ins, outs, axes, opset)
            report.seconds[name] = time.perf_counter() - start
        (tmp / layout.CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    with precision_scope("cpu", torch.float32, backend="reference"), _one_torch_thread(), torch.no_grad():
        atomic.write_folder(out_dir, fill, overwrite=overwrite)
    return report
