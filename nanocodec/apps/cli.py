"""The `nanocodec` command line: encode, decode, roundtrip, info, tokenize, convert, export.

    nanocodec encode IN... -o OUT --model MODEL       audio -> token .safetensors (several IN: OUT is a folder)
    nanocodec decode TOKENS -o OUT.wav [--model M]    tokens -> audio (model from the file unless --model)
    nanocodec roundtrip IN -o OUT.wav --model MODEL   audio -> tokens -> audio
    nanocodec info MODEL | TOKENS                     what a model folder / hub repo or a token file holds
    nanocodec tokenize DIR -o OUT_DIR --model MODEL   a corpus -> token shards + manifest.jsonl (resumable)
        [--engine ray [--address auto|ray://...] [--workers N] [--num-gpus-per-worker N]]   the same on Ray
    nanocodec convert SRC OUT                         a NeMo checkpoint -> a model folder
    nanocodec export MODEL OUT_DIR --format onnx      ONNX graphs + onnx_config.json

Any error of the user's (bad file, bad model, bad option) exits 2 with one line on stderr; a
multi-file encode writes the files it can and reports each bad one on its own line (exit 2).
The model runs under the precision policy (nanocodec/precision.py): float32 without TF32 unless --tf32.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path, PurePosixPath

from ..errors import InvalidInputError, NanoCodecError

DTYPES = ("float32", "float16", "bfloat16")


# ---- shared pieces -------------------------------------------------------------------------
def _device(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InvalidInputError(f"--device {name!r} is not a device; use cpu, cuda, cuda:N, mps or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"--device {name}: CUDA is not available here; use --device cpu")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InvalidInputError(f"--device {name}: MPS is not available here; use --device cpu")
    return device


def _load_model(args, model_arg: str | None, revision: str | None = None):
    from .. import precision
    from ..model import AudioCodecModel

    if not model_arg:
        raise InvalidInputError("no model: pass --model (a converted folder or a hub repo id in nanocodec's layout)")
    return AudioCodecModel.from_pretrained(
        model_arg, revision=revision, device=_device(getattr(args, "device", "cpu")),
        dtype=precision.dtype_of(getattr(args, "dtype", "float32")),
    )


def _precision(args, model):
    """The precision policy's scope for a command's model work (contracts §10): the model's dtype and
    backend; TF32 for float32 on CUDA only with --tf32."""
    from .. import precision

    return precision.precision_scope(model.device, model.dtype, allow_tf32=bool(getattr(args, "tf32", False)),
                                     backend=model.backend)


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _out_sample_len(model, num_samples: int) -> int:
    out_rate, rate = model.config.output_sample_rate, model.sample_rate
    return num_samples if out_rate == rate else math.ceil(num_samples * out_rate / rate)


def _decode_items(model, tf, keys: list[str], batch_size: int, trim: bool) -> dict:
    """Decode token-file items in batches (decode is batch-invariant); audio per key, float32 CPU."""
    out = {}
    by_len = sorted(keys, key=lambda k: (tf.frames(k), k))
    for chunk in _batches(by_len, batch_size):
        tokens, tokens_len = tf.batch(chunk)
        wav, wav_len = model.decode(tokens.to(model.device), tokens_len.to(model.device))
        wav, wav_len = wav.float().cpu(), wav_len.cpu()
        for i, key in enumerate(chunk):
            n = _out_sample_len(model, tf.num_samples[key]) if trim else int(wav_len[i])
            out[key] = wav[i, 0, : min(n, int(wav_len[i]))]
    return out


def _safe_relative(key: str) -> PurePosixPath:
    p = PurePosixPath(key)
    if p.is_absolute() or ".." in p.parts or not p.parts or "\\" in key:
        raise InvalidInputError(f"token file item {key!r} is not a safe relative name; cannot use it as an output path")
    return p


def _names_a_folder(text: str) -> bool:
    """-o ends with a path separator: a folder, whether it exists or not (Path() drops the slash)."""
    return str(text).endswith(("/", os.sep))


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _refuse_overwriting_inputs(inputs: list[Path], outputs: list[Path]) -> None:
    for out in outputs:
        for src in inputs:
            if _same_file(src, out):
                raise InvalidInputError(f"-o {out} is the input {src}: writing it would destroy the input; "
                                        "choose another output name")


def _audio_output(path: Path, subtype: str | None, *, folders: bool = True) -> None:
    """Refuse an output name that cannot be written as audio before any work is done. `folders`: the
    command also writes into a folder (-o ending in /)."""
    from ..fileio import audio

    if not path.suffix or path.is_dir():
        raise InvalidInputError(f"-o {path} is {'a folder' if path.is_dir() else 'no audio file name'}: name a file "
                                f"such as {path / 'out.wav' if path.is_dir() else path.with_suffix('.wav')}"
                                + (" (or end -o with / for a folder)" if folders else ""))
    audio.output_format(path, subtype)


def _report(message: str) -> None:
    print(f"nanocodec: error: {one_line_message(message)}", file=sys.stderr)


# ---- commands ------------------------------------------------------------------------------
def cmd_encode(args) -> int:
    from .. import validation
    from ..fileio import audio, token_files

    inputs = [Path(p) for p in args.inputs]
    out = Path(args.output)
    to_folder = len(inputs) > 1 or out.is_dir() or _names_a_folder(args.output)
    if to_folder:
        if len(inputs) > 1 and not out.is_dir() and out.suffix.lower() == ".safetensors":
            raise InvalidInputError(
                f"{len(inputs)} inputs make one token file each, so -o must be a folder, not {out}; "
                f"pass e.g. -o {out.with_suffix('')}/ (or use `nanocodec tokenize` for one file per shard)"
            )
        if out.exists() and not out.is_dir():
            raise InvalidInputError(f"{out} is a file; with several inputs -o must be a folder")
        stems = [p.stem for p in inputs]
        twice = sorted({s for s in stems if stems.count(s) > 1})
        if twice:
            raise InvalidInputError(
                f"several inputs are named {twice[0]!r}: their token files would collide in {out}; "
                "encode them separately or use `nanocodec tokenize` on their folder"
            )
    dests = [out / f"{p.stem}.safetensors" for p in inputs] if to_folder else [out]
    _refuse_overwriting_inputs(inputs, dests)
    model = _load_model(args, args.model, args.revision)
    failed = []  # one line per input that cannot be encoded; the others are still written
    clips = {}
    for i, path in enumerate(inputs):
        try:
            clip = audio.read(path, model.sample_rate)
            validation.audio_batch(clip.tensor(), None, clip.tensor().dtype, "cpu", name=str(path))  # loud, NaN
            clips[i] = clip
        except InvalidInputError as e:
            failed.append(str(e))
    with _precision(args, model):
        meta = token_files.header(model, token_files.model_reference(args.model), args.revision)
        tokens = {}
        by_len = sorted(clips, key=lambda i: clips[i].num_samples)
        for chunk in _batches(by_len, args.batch_size):
            tokens.update(_encode_or_report(model, [(i, inputs[i], clips[i]) for i in chunk], failed))
    for i in sorted(tokens):
        path, clip = inputs[i], clips[i]
        key = token_files.SINGLE_KEY
        token_files.write(dests[i], {key: tokens[i]}, {key: clip.num_samples}, {**meta, "source": path.name})
        _say(args, f"{path} -> {dests[i]} ({tokens[i].shape[-1]} frames x {tokens[i].shape[0]} codebooks)")
    for message in failed:
        _report(message)
    if failed and len(inputs) > 1:
        _say(args, f"{len(tokens)} of {len(inputs)} inputs encoded; {len(failed)} failed (above)")
    return 2 if failed else 0


def _encode_or_report(model, items, failed: list) -> dict:
    """Tokens per index for one batch of (index, path, clip); an item the model refuses (e.g. too
    short for reflect padding) is reported with its file name and spares the others."""
    from .corpus import encode_batch

    try:
        return dict(zip((i for i, _, _ in items), encode_batch(model, [clip.samples for _, _, clip in items])))
    except InvalidInputError as e:
        if len(items) == 1:
            failed.append(f"{items[0][1]}: {e}")
            return {}
    out = {}
    for item in items:
        out.update(_encode_or_report(model, [item], failed))
    return out


def cmd_decode(args) -> int:
    from ..errors import CheckpointError
    from ..fileio import audio, token_files

    tf = token_files.read(args.tokens)
    keys = sorted(tf.tokens)
    if not keys:
        raise InvalidInputError(f"{args.tokens} holds no items")
    out = Path(args.output)
    to_folder = len(keys) > 1 or out.is_dir() or _names_a_folder(args.output)
    if to_folder:
        if out.exists() and not out.is_dir():
            raise InvalidInputError(f"{args.tokens} holds {len(keys)} items: -o must be a folder, {out} is a file")
        stem = Path(args.tokens).stem  # `encode`'s single item is named after its token file
        dests = {k: out / (f"{stem}.wav" if k == token_files.SINGLE_KEY else _safe_relative(k).with_suffix(".wav"))
                 for k in keys}
    else:
        _audio_output(out, args.subtype)
        dests = {keys[0]: out}
    _refuse_overwriting_inputs([Path(args.tokens)], list(dests.values()))
    model_arg = args.model or tf.model
    if not model_arg:
        raise InvalidInputError(f"{args.tokens} names no model; pass --model")
    try:
        model = _load_model(args, model_arg, args.revision or (None if args.model else tf.model_revision))
    except (InvalidInputError, CheckpointError) as e:
        if args.model:
            raise
        raise InvalidInputError(
            f"the model recorded in {args.tokens} ({tf.model!r}, where it was when the tokens were made) cannot "
            f"be loaded: {one_line_message(e)}; if it moved, pass --model with its folder or hub repo id"
        ) from None
    if model.config.sha256() != tf.config_sha256:
        raise InvalidInputError(
            f"{args.tokens} was made by a model with config sha256 {tf.config_sha256[:12]}..., "
            f"{model_arg} has {model.config.sha256()[:12]}...: decode with the model that encoded it"
        )
    with _precision(args, model):
        wavs = _decode_items(model, tf, keys, args.batch_size, trim=not args.no_trim)
    rate = model.config.output_sample_rate
    for key in keys:
        audio.write(dests[key], wavs[key], rate, subtype=args.subtype)
    if to_folder:
        _say(args, f"{args.tokens} -> {out}/ ({len(keys)} files at {rate} Hz)")
    else:
        _say(args, f"{args.tokens} -> {out} ({len(wavs[keys[0]])} samples at {rate} Hz)")
    return 0


def cmd_roundtrip(args) -> int:
    import torch

    from .. import validation
    from ..fileio import audio

    src, out = Path(args.input), Path(args.output)
    _refuse_overwriting_inputs([src], [out])
    _audio_output(out, args.subtype, folders=False)
    model = _load_model(args, args.model, args.revision)
    clip = audio.read(src, model.sample_rate)
    validation.audio_batch(clip.tensor(), None, clip.tensor().dtype, "cpu", name=str(src))
    x = clip.tensor().to(model.device)
    with _precision(args, model):
        try:
            tokens, tokens_len = model.encode(x[None], torch.tensor([clip.num_samples]))
        except InvalidInputError as e:
            raise InvalidInputError(f"{src}: {e}") from None
        wav, wav_len = model.decode(tokens, tokens_len)
    wav = wav[0, 0].float().cpu()
    if not args.no_trim:
        wav = audio.trim(wav, _out_sample_len(model, clip.num_samples))
    audio.write(out, wav, model.config.output_sample_rate, subtype=args.subtype)
    _say(args, f"{src} -> {tokens.shape[-1]} frames -> {out}")
    return 0


def cmd_info(args) -> int:
    target = Path(args.target)
    if target.is_file() and target.suffix == ".safetensors":
        from ..fileio import token_files

        tf = token_files.read(target)
        info = {k: v for k, v in tf.metadata.items() if k != "lengths"}
        info["items"] = {k: {"frames": tf.frames(k), "num_samples": tf.num_samples[k]} for k in sorted(tf.tokens)}
    else:
        model = _load_model(args, args.target, args.revision)
        cfg = model.config
        info = {
            "model": args.target,
            "sample_rate": cfg.sample_rate,
            "output_sample_rate": cfg.output_sample_rate,
            "samples_per_frame": cfg.samples_per_frame,
            "frame_rate": round(cfg.frame_rate, 6),
            "num_codebooks": cfg.num_codebooks,
            "codebook_size": cfg.codebook_size,
            "levels_per_group": list(cfg.quantizer.num_levels_per_group),
            "bitrate_kbps": round(cfg.bitrate / 1000, 4),
            "parameters": model.num_parameters(),
            "encoder_pad_mode": cfg.encoder.pad_mode,
            "config_sha256": cfg.sha256(),
        }
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        width = max(len(k) for k in info)
        for k, v in info.items():
            print(f"{k:<{width}}  {json.dumps(v) if isinstance(v, (dict, list)) else v}")
    return 0


def cmd_tokenize(args) -> int:
    from .corpus import tokenize

    if args.engine == "ray":
        from .ray_engine import require_ray
        from .ray_engine import tokenize as tokenize_on_ray

        require_ray()
        if args.device != "cpu":
            raise InvalidInputError("with --engine ray the encoders run on a GPU when --num-gpus-per-worker > 0; "
                                    "leave --device out")
        model = _load_model(args, args.model, args.revision)  # on the driver: settings and shard headers
        res = tokenize_on_ray(
            args.folder, args.output, model, model_ref=args.model, revision=args.revision,
            shard_size=args.shard_size, batch_size=args.batch_size, allow_tf32=args.tf32, progress=not args.quiet,
            address=args.address, workers=args.workers, num_gpus_per_worker=args.num_gpus_per_worker,
            cpus_per_worker=args.cpus_per_worker,
        )
    else:
        given = [f"--{k.replace('_', '-')}" for k in ("address", "workers", "num_gpus_per_worker", "cpus_per_worker")
                 if getattr(args, k) is not None]
        if given:
            raise InvalidInputError(f"{', '.join(given)}: only with --engine ray")
        model = _load_model(args, args.model, args.revision)
        res = tokenize(
            args.folder, args.output, model, model_ref=args.model, revision=args.revision,
            shard_size=args.shard_size, batch_size=args.batch_size, allow_tf32=args.tf32, progress=not args.quiet,
        )
    _say(args, res.summary(args.output))
    return 0


def _say(args, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr)


# ---- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from . import DEFAULT_BATCH_SIZE, DEFAULT_SHARD_SIZE

    # each command gets only the options that apply to it
    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", help="converted model folder or hub repo id in nanocodec's layout")
    model.add_argument("--revision", help="hub revision (branch, tag or commit) of --model")
    run = argparse.ArgumentParser(add_help=False)
    run.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, mps or auto")
    run.add_argument("--dtype", default="float32", choices=DTYPES,
                     help="encoder/decoder precision (the quantizer is always float32)")
    run.add_argument("--tf32", action="store_true",
                     help="allow TF32 for float32 convs and matmuls on CUDA (faster, not NeMo-exact; default off)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress or summary on stderr")
    batch = argparse.ArgumentParser(add_help=False)
    batch.add_argument("--batch-size", type=_positive, default=DEFAULT_BATCH_SIZE, metavar="N",
                       help=f"items per forward pass (default {DEFAULT_BATCH_SIZE})")
    audio_out = argparse.ArgumentParser(add_help=False)
    audio_out.add_argument("--no-trim", action="store_true",
                           help="keep the decoder's whole frames instead of trimming to the input's length")
    audio_out.add_argument("--subtype", default=None,
                           help="soundfile subtype of the output (WAV default FLOAT; e.g. PCM_16)")

    p = argparse.ArgumentParser(prog="nanocodec", description="NVIDIA NanoCodec in plain PyTorch: audio <-> tokens.")
    p.add_argument("--version", action="version", version=f"nanocodec {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("encode", parents=[model, run, batch], help="audio files -> token .safetensors",
                       description="Encode audio files (any soundfile format, any rate, mono or not) to tokens. "
                                   "A file that cannot be encoded is reported and the others are still written "
                                   "(exit 2 if any failed).")
    s.add_argument("inputs", nargs="+", metavar="IN")
    s.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="token file (one input) or folder (several inputs, an existing folder, or a name ending in /)")
    s.set_defaults(func=cmd_encode)

    s = sub.add_parser("decode", parents=[model, run, batch, audio_out], help="token .safetensors -> audio",
                       description="Decode a token file (from encode, or a tokenize shard) to audio at the model's "
                                   "output rate; the model named in the file unless --model.")
    s.add_argument("tokens", metavar="TOKENS")
    s.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="audio file (one item) or folder (a shard: one file per item; a name ending in / is a "
                        "folder, created if needed)")
    s.set_defaults(func=cmd_decode)

    s = sub.add_parser("roundtrip", parents=[model, run, audio_out], help="audio -> tokens -> audio",
                       description="Encode one audio file and decode it again (what the codec keeps), written at "
                                   "the model's output rate, trimmed to the input's length unless --no-trim.")
    s.add_argument("input", metavar="IN")
    s.add_argument("-o", "--output", required=True, metavar="OUT", help="audio file (not the input)")
    s.set_defaults(func=cmd_roundtrip)

    s = sub.add_parser("info", help="describe a model or a token file",
                       description="Print what a model (converted folder or hub repo) or a token file holds: rates, "
                                   "frame rate, codebooks, bitrate, parameters, config sha256; or a token file's "
                                   "header and items.")
    s.add_argument("target", metavar="MODEL|TOKENS")
    s.add_argument("--revision", help="hub revision (branch, tag or commit) of a hub MODEL")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("tokenize", parents=[model, run, batch], help="a corpus folder -> token shards + manifest.jsonl",
                       description="Tokenize every audio file under DIR into OUT_DIR; rerun the same command to resume.")
    s.add_argument("folder", metavar="DIR")
    s.add_argument("-o", "--output", required=True, metavar="OUT_DIR")
    s.add_argument("--shard-size", type=_positive, default=DEFAULT_SHARD_SIZE, metavar="N",
                   help=f"files per shard (default {DEFAULT_SHARD_SIZE}); fixed for an output folder")
    s.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (default); ray: a Ray Data pipeline on a Ray cluster (pip install "
                        "'nanocodec[ray]'), same shards and manifest")
    s.add_argument("--address", default=None, metavar="ADDR",
                   help="Ray cluster to use: auto (the one this node belongs to), ray://HOST:10001, or HOST:6379 "
                        "(default: RAY_ADDRESS, else a local one just for this run)")
    s.add_argument("--workers", type=_positive, default=None, metavar="N",
                   help="Ray encode actors, each loading the model once (default: one per GPU, or per CPU)")
    s.add_argument("--num-gpus-per-worker", type=_nonnegative, default=None, metavar="N",
                   help="GPUs per Ray encode actor (e.g. 1, or 0.5 for two per GPU; default 0: CPU)")
    s.add_argument("--cpus-per-worker", type=_nonnegative, default=None, metavar="N",
                   help="CPUs reserved per Ray encode actor, also its torch threads (default 1)")
    s.set_defaults(func=cmd_tokenize)

    from ..convert import command as convert_command  # torch-free until a conversion runs

    s = sub.add_parser("convert", help="a NeMo checkpoint -> a nanocodec model folder",
                       description="Convert a .nemo (file or hub repo holding one) or a folder of NeMo-named "
                                   "safetensors into a nanocodec model folder (config.json + model.safetensors).")
    convert_command.add_arguments(s)
    s.add_argument("-q", "--quiet", action="store_true", help="no summary")
    s.set_defaults(func=convert_command.run)

    from ..onnx import command as export_command  # torch-free until an export runs

    s = sub.add_parser("export", help="a model -> ONNX graphs (encoder, decoder, decoder step)",
                       description="Export a model (anything from_pretrained takes) to ONNX: encoder.onnx, "
                                   "decoder.onnx, decoder_step.onnx (causal decoders) and onnx_config.json, for "
                                   "nanocodec.onnx.OnnxCodec or any ONNX runtime.")
    export_command.add_arguments(s)
    s.add_argument("-q", "--quiet", action="store_true", help="no progress or summary")
    s.set_defaults(func=export_command.run)
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _nonnegative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (NanoCodecError, OSError) as e:  # OSError: unwritable output, full disk: the user's to fix
        _report(str(e))
        return 2
    except KeyboardInterrupt:
        print("nanocodec: interrupted", file=sys.stderr)
        return 130


# The library's hints name its Python arguments; on the command line the same fix is a flag.
_CLI_HINTS = (("--overwrite (overwrite=True)", "--overwrite"), ("overwrite=True", "--overwrite"))


def one_line_message(e) -> str:
    """An error as the command line shows it: one line, the library's Python hints as flags (for every
    command-line entry point: python -m nanocodec.convert and python -m nanocodec.onnx too)."""
    text = " ".join(str(e).split()) or type(e).__name__
    for python_hint, flag in _CLI_HINTS:
        text = text.replace(python_hint, flag)
    return text


if __name__ == "__main__":
    sys.exit(main())
