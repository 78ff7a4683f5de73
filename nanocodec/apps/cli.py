"""The `nanocodec` command line: encode, decode, roundtrip, info, tokenize.

    nanocodec encode IN... -o OUT --model MODEL       audio -> token .safetensors (several IN: OUT is a folder)
    nanocodec decode TOKENS -o OUT.wav [--model M]    tokens -> audio (model from the file unless --model)
    nanocodec roundtrip IN -o OUT.wav --model MODEL   audio -> tokens -> audio
    nanocodec info MODEL | TOKENS                     what a model folder / hub repo or a token file holds
    nanocodec tokenize DIR -o OUT_DIR --model MODEL   a corpus -> token shards + manifest.jsonl (resumable)
        [--engine ray [--address auto|ray://...] [--workers N] [--num-gpus-per-worker N]]   the same on Ray

Any error of the user's (bad file, bad model, bad option) exits 2 with one line on stderr.
"""
from __future__ import annotations

import argparse
import json
import math
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
    import torch

    from ..model import AudioCodecModel

    if not model_arg:
        raise InvalidInputError("no model: pass --model (a converted folder or a hub repo id in nanocodec's layout)")
    return AudioCodecModel.from_pretrained(
        model_arg, revision=revision, device=_device(args.device), dtype=getattr(torch, args.dtype)
    )


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


# ---- commands ------------------------------------------------------------------------------
def cmd_encode(args) -> int:
    from ..fileio import audio, token_files
    from .corpus import encode_batch

    inputs = [Path(p) for p in args.inputs]
    out = Path(args.output)
    to_folder = len(inputs) > 1 or out.is_dir() or str(args.output).endswith(("/", "\\"))
    if to_folder:
        stems = [p.stem for p in inputs]
        twice = sorted({s for s in stems if stems.count(s) > 1})
        if twice:
            raise InvalidInputError(
                f"several inputs are named {twice[0]!r}: their token files would collide in {out}; "
                "encode them separately or use `nanocodec tokenize` on their folder"
            )
        if out.exists() and not out.is_dir():
            raise InvalidInputError(f"{out} is a file; with several inputs -o must be a folder")
    model = _load_model(args, args.model, args.revision)
    meta = token_files.header(model, token_files.model_reference(args.model), args.revision)
    clips = [(p, audio.read(p, model.sample_rate)) for p in inputs]
    by_len = sorted(range(len(clips)), key=lambda i: clips[i][1].num_samples)
    tokens = {}
    for chunk in _batches(by_len, args.batch_size):
        for i, t in zip(chunk, encode_batch(model, [clips[i][1].samples for i in chunk])):
            tokens[i] = t
    for i, (path, clip) in enumerate(clips):
        dest = out / f"{path.stem}.safetensors" if to_folder else out
        key = token_files.SINGLE_KEY
        token_files.write(dest, {key: tokens[i]}, {key: clip.num_samples}, {**meta, "source": path.name})
        _say(args, f"{path} -> {dest} ({tokens[i].shape[-1]} frames x {tokens[i].shape[0]} codebooks)")
    return 0


def cmd_decode(args) -> int:
    from ..fileio import audio, token_files

    tf = token_files.read(args.tokens)
    model_arg = args.model or tf.model
    if not model_arg:
        raise InvalidInputError(f"{args.tokens} names no model; pass --model")
    model = _load_model(args, model_arg, args.revision or (None if args.model else tf.model_revision))
    if model.config.sha256() != tf.config_sha256:
        raise InvalidInputError(
            f"{args.tokens} was made by a model with config sha256 {tf.config_sha256[:12]}..., "
            f"{model_arg} has {model.config.sha256()[:12]}...: decode with the model that encoded it"
        )
    keys = sorted(tf.tokens)
    if not keys:
        raise InvalidInputError(f"{args.tokens} holds no items")
    wavs = _decode_items(model, tf, keys, args.batch_size, trim=not args.no_trim)
    rate = model.config.output_sample_rate
    out = Path(args.output)
    if len(keys) == 1 and not out.is_dir():
        audio.write(out, wavs[keys[0]], rate, subtype=args.subtype)
        _say(args, f"{args.tokens} -> {out} ({len(wavs[keys[0]])} samples at {rate} Hz)")
        return 0
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"{args.tokens} holds {len(keys)} items: -o must be a folder, {out} is a file")
    for key in keys:
        dest = out / _safe_relative(key).with_suffix(".wav")
        audio.write(dest, wavs[key], rate, subtype=args.subtype)
    _say(args, f"{args.tokens} -> {out}/ ({len(keys)} files at {rate} Hz)")
    return 0


def cmd_roundtrip(args) -> int:
    import torch

    from ..fileio import audio

    model = _load_model(args, args.model, args.revision)
    clip = audio.read(args.input, model.sample_rate)
    x = clip.tensor().to(model.device)
    tokens, tokens_len = model.encode(x[None], torch.tensor([clip.num_samples]))
    wav, wav_len = model.decode(tokens, tokens_len)
    wav = wav[0, 0].float().cpu()
    if not args.no_trim:
        wav = audio.trim(wav, _out_sample_len(model, clip.num_samples))
    audio.write(args.output, wav, model.config.output_sample_rate, subtype=args.subtype)
    _say(args, f"{args.input} -> {tokens.shape[-1]} frames -> {args.output}")
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
            shard_size=args.shard_size, batch_size=args.batch_size, progress=not args.quiet,
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
            shard_size=args.shard_size, batch_size=args.batch_size, progress=not args.quiet,
        )
    hours = res.audio_seconds / 3600
    _say(args, (
        f"{res.files} files in {res.shards} shards ({res.shards_skipped} already done): tokenized {res.encoded} "
        f"({hours:.3g} h of audio, {hours / max(res.seconds, 1e-9):.3g} h/s); {len(res.failed)} unreadable "
        f"skipped (all are listed in {Path(args.output) / 'errors.jsonl'})"
    ))
    return 0


def _say(args, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr)


# ---- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from . import DEFAULT_BATCH_SIZE, DEFAULT_SHARD_SIZE

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", help="converted model folder or hub repo id in nanocodec's layout")
    common.add_argument("--revision", help="hub revision (branch, tag or commit) of --model")
    common.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, mps or auto")
    common.add_argument("--dtype", default="float32", choices=DTYPES,
                        help="encoder/decoder precision (the quantizer is always float32)")
    common.add_argument("--batch-size", type=_positive, default=DEFAULT_BATCH_SIZE, metavar="N",
                        help=f"items per forward pass (default {DEFAULT_BATCH_SIZE})")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress or summary on stderr")
    audio_out = argparse.ArgumentParser(add_help=False)
    audio_out.add_argument("--no-trim", action="store_true",
                           help="keep the decoder's whole frames instead of trimming to the input's length")
    audio_out.add_argument("--subtype", default=None,
                           help="soundfile subtype of the output (WAV default FLOAT; e.g. PCM_16)")

    p = argparse.ArgumentParser(prog="nanocodec", description="NVIDIA NanoCodec in plain PyTorch: audio <-> tokens.")
    p.add_argument("--version", action="version", version=f"nanocodec {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("encode", parents=[common], help="audio files -> token .safetensors",
                       description="Encode audio files (any soundfile format, any rate, mono or not) to tokens.")
    s.add_argument("inputs", nargs="+", metavar="IN")
    s.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="token file (one input) or folder (several inputs, or an existing folder)")
    s.set_defaults(func=cmd_encode)

    s = sub.add_parser("decode", parents=[common, audio_out], help="token .safetensors -> audio",
                       description="Decode a token file (from encode, or a tokenize shard) to audio.")
    s.add_argument("tokens", metavar="TOKENS")
    s.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="audio file (one item) or folder (a shard: one file per item)")
    s.set_defaults(func=cmd_decode)

    s = sub.add_parser("roundtrip", parents=[common, audio_out], help="audio -> tokens -> audio")
    s.add_argument("input", metavar="IN")
    s.add_argument("-o", "--output", required=True, metavar="OUT")
    s.set_defaults(func=cmd_roundtrip)

    s = sub.add_parser("info", parents=[common], help="describe a model or a token file")
    s.add_argument("target", metavar="MODEL|TOKENS")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("tokenize", parents=[common], help="a corpus folder -> token shards + manifest.jsonl",
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
    except NanoCodecError as e:
        print(f"nanocodec: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:  # unwritable output, full disk: the user's to fix, not a crash
        print(f"nanocodec: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nanocodec: interrupted", file=sys.stderr)
        return 130


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
