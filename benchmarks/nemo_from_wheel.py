"""NeMo 3.0.0's own codec modules, run without the NeMo framework (issue 7, CUDA half).

The GPU machine has torch but no NeMo and no network, and NeMo's framework (hydra, lightning,
omegaconf, lhotse, ...) is far too large to carry. The codec's computation lives in two plain
PyTorch files, so those files are executed as they are, straight from the nemo-toolkit wheel (a
zip) or from an installed `nemo` package folder:

    nemo/collections/common/parts/utils.py                (Snake, HalfSnake, ClampActivation, masks)
    nemo/collections/tts/modules/audio_codec_modules.py   (HiFiGANEncoder, GroupFiniteScalarQuantizer,
                                                           CausalHiFiGANDecoder, ...)

Their framework imports (typecheck, NeuralModule, neural types, NeMo's logging, the ASR/audio
preprocessors and transformers, which only classes we never build use) are replaced by small stubs,
visible only while the two files are executed: afterwards sys.modules is restored, so a real NeMo
in the same interpreter is not disturbed. `typecheck` in NeMo checks argument names and attaches
type tags; it never changes values, so an identity decorator computes exactly what NeMo computes.

`NemoCodec` recomposes NeMo's `AudioCodecModel` inference methods (encode_audio, quantize,
dequantize, decode_audio, encode, decode) line for line around those modules, with NeMo's state-dict
names (audio_encoder.*, vector_quantizer.*, audio_decoder.*).
"""
from __future__ import annotations

import contextlib
import glob
import importlib.util
import linecache
import logging
import sys
import types
import zipfile
from pathlib import Path

import torch
from torch import nn

UTILS = "nemo/collections/common/parts/utils.py"
CODEC_MODULES = "nemo/collections/tts/modules/audio_codec_modules.py"
WHEEL_GLOB = "nemo_toolkit-*.whl"


# ----------------------------------------------------------------------------------------------
# where NeMo's source comes from: a wheel (zip) or a package folder
# ----------------------------------------------------------------------------------------------
class _Source:
    """Reads `nemo/...py` files from a wheel or from the folder that holds the `nemo` package."""

    def __init__(self, path: Path):
        path = Path(path).resolve()
        if path.is_file() and zipfile.is_zipfile(path):
            self.zip, self.root = zipfile.ZipFile(path), None
        elif path.is_dir():
            # accept the package folder itself (.../site-packages/nemo) or its parent
            root = path.parent if (path / "collections").is_dir() and path.name == "nemo" else path
            if not (root / CODEC_MODULES).is_file():
                raise FileNotFoundError(f"{path}: no {CODEC_MODULES} under it (not a nemo package folder)")
            self.zip, self.root = None, root
        else:
            raise FileNotFoundError(f"{path}: neither a nemo-toolkit wheel nor a nemo package folder")
        self.path = path

    def read(self, rel: str) -> str:
        if self.zip is not None:
            return self.zip.read(rel).decode("utf-8")
        return (self.root / rel).read_text(encoding="utf-8")

    def version(self) -> str:
        if self.zip is not None:
            name = self.path.name  # nemo_toolkit-3.0.0-py3-none-any.whl
            return name.split("-")[1] if name.count("-") >= 2 else "unknown"
        text = self.read("nemo/package_info.py")
        ns: dict = {}
        for line in text.splitlines():  # MAJOR = 3 ... __version__ built from them
            if line.split("=")[0].strip() in ("MAJOR", "MINOR", "PATCH", "PRE_RELEASE"):
                exec(line, ns)  # noqa: S102  literal assignments from NeMo's own package_info.py
        return ".".join(str(ns.get(k, "?")) for k in ("MAJOR", "MINOR", "PATCH")) + str(ns.get("PRE_RELEASE", ""))

    def where(self, rel: str) -> str:
        # a file name inspect/linecache can key on (torch.jit.script reads the source through it)
        return f"{self.path}/{rel}" if self.zip is not None else str(self.root / rel)


def find_nemo_source(explicit: str | Path | None = None, repo: Path | None = None) -> Path:
    """A wheel or nemo package folder: `explicit`, else .devicecarry/'s wheel, else the oracle venv's
    installed nemo, else an installed nemo found without importing it."""
    if explicit:
        return Path(explicit)
    repo = repo or Path(__file__).resolve().parents[1]
    wheels = sorted(glob.glob(str(repo / ".devicecarry" / WHEEL_GLOB)))
    if wheels:
        return Path(wheels[-1])
    venv = sorted(glob.glob(str(repo / "parity" / "oracle" / ".venv" / "lib" / "python*" / "site-packages" / "nemo")))
    if venv:
        return Path(venv[-1])
    spec = importlib.util.find_spec("nemo")
    if spec and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    raise FileNotFoundError(
        "no NeMo source: run benchmarks/device_prep.sh (puts the nemo-toolkit wheel in .devicecarry/), "
        "or `make oracle`, or pass the wheel / a nemo package folder explicitly"
    )


# ----------------------------------------------------------------------------------------------
# einops: NeMo's files use it; the GPU image has it, our CPU venv does not
# ----------------------------------------------------------------------------------------------
def ensure_einops(near: Path) -> str:
    """Import einops, or make it importable from a wheel beside `near` (zipimport reads pure-Python
    wheels) or from the site-packages folder an installed nemo sits in. Returns where it came from."""
    if importlib.util.find_spec("einops") is not None:
        import einops

        return f"installed einops {einops.__version__}"
    near = Path(near).resolve()
    # a wheel's folder; the site-packages folder of .../site-packages/nemo, or that folder itself
    folder = near.parent if near.is_file() or near.name == "nemo" else near
    wheels = sorted(glob.glob(str(folder / "einops-*.whl")))
    if wheels:
        sys.path.insert(0, wheels[-1])
        import einops

        return f"einops {einops.__version__} from {Path(wheels[-1]).name}"
    package = folder / "einops"
    if (package / "__init__.py").is_file():  # only this package of that site-packages, not the folder
        spec = importlib.util.spec_from_file_location("einops", str(package / "__init__.py"),
                                                      submodule_search_locations=[str(package)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["einops"] = mod
        spec.loader.exec_module(mod)
        return f"einops {mod.__version__} from {package}"
    raise ModuleNotFoundError(f"einops is needed by NeMo's codec modules: none installed and none beside {near}")


# ----------------------------------------------------------------------------------------------
# stubs for the framework imports
# ----------------------------------------------------------------------------------------------
class _Anything:
    """Neural-type tags (NeuralType(...), AudioSignal(), ...): built at class-definition time in
    NeMo's decorators, never used for computing."""

    def __init__(self, *args, **kwargs):
        pass


def _unavailable(name: str) -> type:
    """Framework classes only the modules we never build use (mel front ends, SSL models)."""

    class Unavailable:
        def __init__(self, *args, **kwargs):
            raise NotImplementedError(f"{name} is part of the NeMo framework, which nemo_from_wheel does not load")

        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            cls()

    Unavailable.__name__ = Unavailable.__qualname__ = name
    return Unavailable


class typecheck:  # noqa: N801  NeMo's name
    """NeMo's @typecheck(...) checks argument names and tags outputs; values are untouched."""

    def __init__(self, input_types=None, output_types=None, ignore_collections=False):
        pass

    def __call__(self, fn):
        return fn


class NeuralModule(nn.Module):
    """NeMo's NeuralModule is nn.Module plus typing/serialization mixins the codec never calls in
    inference; freeze/unfreeze are kept for code that does call them."""

    @property
    def input_types(self):
        return None

    @property
    def output_types(self):
        return None

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad = False
        self.eval()

    def unfreeze(self, partial: bool = False) -> None:
        for p in self.parameters():
            p.requires_grad = True
        self.train()


class _TagModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything


def _stub_modules() -> dict[str, types.ModuleType]:
    def mod(name, cls=types.ModuleType, **attrs):
        m = cls(name)
        m.__path__ = []  # a package, so submodule imports resolve through sys.modules
        m.__dict__.update(attrs)
        return m

    log = logging.getLogger("nemo_from_wheel")
    log.setLevel(logging.WARNING)
    stubs = {name: mod(name) for name in (
        "nemo", "nemo.core", "nemo.core.classes", "nemo.collections", "nemo.collections.asr",
        "nemo.collections.audio", "nemo.collections.audio.parts", "nemo.collections.audio.parts.utils",
        "nemo.collections.common", "nemo.collections.common.parts", "nemo.collections.tts",
        "nemo.collections.tts.modules")}
    stubs.update({
        "nemo.core.classes.common": mod("nemo.core.classes.common", typecheck=typecheck),
        "nemo.core.classes.module": mod("nemo.core.classes.module", NeuralModule=NeuralModule),
        "nemo.core.neural_types": mod("nemo.core.neural_types", _TagModule),
        "nemo.core.neural_types.elements": mod("nemo.core.neural_types.elements", _TagModule),
        "nemo.core.neural_types.neural_type": mod("nemo.core.neural_types.neural_type", NeuralType=_Anything),
        "nemo.utils": mod("nemo.utils", logging=log),
        "nemo.collections.asr.modules": mod(
            "nemo.collections.asr.modules", AudioToMelSpectrogramPreprocessor=_unavailable("AudioToMelSpectrogramPreprocessor")),
        "nemo.collections.audio.parts.utils.transforms": mod(
            "nemo.collections.audio.parts.utils.transforms", MelSpectrogram=_unavailable("MelSpectrogram"),
            Resample=_unavailable("Resample")),
        # transformers is only for the SSL discriminator; importing the real one costs seconds
        "transformers": mod("transformers", **{n: _unavailable(n) for n in ("AutoFeatureExtractor", "AutoModel", "Wav2Vec2BertModel")}),
    })
    return stubs


@contextlib.contextmanager
def _sandboxed(stubs: dict):
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


def _exec_file(src: _Source, rel: str, name: str) -> types.ModuleType:
    code = src.read(rel)
    filename = src.where(rel)
    # source in linecache with mtime None (never invalidated): torch.jit.script and inspect find it
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
    module = types.ModuleType(name)
    module.__file__ = filename
    module.__package__ = name.rpartition(".")[0]
    sys.modules[name] = module
    exec(compile(code, filename, "exec"), module.__dict__)  # noqa: S102  NeMo's own released source
    return module


class NemoModules(types.SimpleNamespace):
    """utils, audio_codec_modules (the executed files), version, source, einops."""


_CACHE: dict[str, NemoModules] = {}


def load(source: str | Path | None = None) -> NemoModules:
    """NeMo's utils.py and audio_codec_modules.py, executed from `source` (see find_nemo_source)."""
    path = find_nemo_source(source)
    key = str(Path(path).resolve())
    if key in _CACHE:
        return _CACHE[key]
    src = _Source(path)
    einops_from = ensure_einops(path)
    stubs = _stub_modules()
    with _sandboxed({**stubs, "nemo.collections.common.parts.utils": None,
                     "nemo.collections.tts.modules.audio_codec_modules": None}):
        utils = _exec_file(src, UTILS, "nemo.collections.common.parts.utils")
        codec = _exec_file(src, CODEC_MODULES, "nemo.collections.tts.modules.audio_codec_modules")
    out = NemoModules(utils=utils, audio_codec_modules=codec, version=src.version(), source=str(src.path),
                      einops=einops_from)
    _CACHE[key] = out
    return out


# ----------------------------------------------------------------------------------------------
# NeMo's AudioCodecModel inference, recomposed around the modules
# ----------------------------------------------------------------------------------------------
def _instantiate(mods: NemoModules, section: dict) -> nn.Module:
    """hydra's instantiate for one config section: the class named by _target_, called with the rest."""
    cls_name = section["_target_"].rsplit(".", 1)[-1]
    cls = getattr(mods.audio_codec_modules, cls_name)
    return cls(**{k: v for k, v in section.items() if k != "_target_"})


class NemoCodec(nn.Module):
    """NeMo 3.0.0 `AudioCodecModel`'s inference path (nemo/collections/tts/models/audio_codec.py):
    same submodule names, same construction order (encoder, quantizer, decoder: a seed gives the
    weights NeMo's own constructor gives), same methods with NeMo's keyword arguments."""

    def __init__(self, cfg: dict, mods: NemoModules):
        super().__init__()
        self.mods = mods
        self.sample_rate = cfg["sample_rate"]
        self.samples_per_frame = cfg["samples_per_frame"]
        self.audio_encoder = _instantiate(mods, cfg["audio_encoder"])
        self.vector_quantizer = _instantiate(mods, cfg["vector_quantizer"])
        self.audio_decoder = _instantiate(mods, cfg["audio_decoder"])
        self.eval()

    @property
    def dtype(self):
        return next(self.parameters()).dtype

    def pad_audio(self, audio, audio_len, samples_per_frame):
        F = nn.functional
        num_frames = audio_len / samples_per_frame
        num_frames = torch.where(audio_len % samples_per_frame == 0, num_frames, torch.ceil(num_frames))
        padded_len = samples_per_frame * num_frames.int()
        max_len = padded_len.max().item()
        num_padding = max_len - audio.shape[1]
        padded_audio = F.pad(audio, (0, num_padding))
        return padded_audio, padded_len

    def encode_audio(self, audio, audio_len):
        audio, audio_len = self.pad_audio(audio=audio, audio_len=audio_len, samples_per_frame=self.samples_per_frame)
        return self.audio_encoder(audio=audio, audio_len=audio_len)

    def quantize(self, encoded, encoded_len):
        with self.mods.audio_codec_modules.default_precision(torch.float32):
            tokens = self.vector_quantizer.encode(inputs=encoded, input_len=encoded_len)
        return self.mods.audio_codec_modules.rearrange(tokens, "C B T -> B C T")

    def dequantize(self, tokens, tokens_len):
        tokens = self.mods.audio_codec_modules.rearrange(tokens, "B C T -> C B T")
        with self.mods.audio_codec_modules.default_precision(torch.float32):
            dequantized = self.vector_quantizer.decode(indices=tokens, input_len=tokens_len)
        return dequantized.to(self.dtype)

    def decode_audio(self, inputs, input_len):
        return self.audio_decoder(inputs=inputs, input_len=input_len)

    def encode(self, audio, audio_len):
        encoded, encoded_len = self.encode_audio(audio=audio, audio_len=audio_len)
        tokens = self.quantize(encoded=encoded, encoded_len=encoded_len)
        return tokens, encoded_len

    def decode(self, tokens, tokens_len):
        dequantized = self.dequantize(tokens=tokens, tokens_len=tokens_len)
        dequantized = dequantized.to(self.dtype)
        return self.decode_audio(inputs=dequantized, input_len=tokens_len)

    def forward(self, audio, audio_len):
        tokens, tokens_len = self.encode(audio=audio, audio_len=audio_len)
        return self.decode(tokens=tokens, tokens_len=tokens_len)
