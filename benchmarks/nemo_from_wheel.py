"""NeMo 3.0.0's own codec modules, run without the NeMo framework (issue 7, CUDA half).

The GPU machine has torch but no NeMo and no network, and NeMo's framework (hydra, lightning, omegaconf,
lhotse, ...) is far too large to carry. The codec's computation lives in two plain PyTorch files, executed as
they are from the nemo-toolkit wheel (a zip) or from an installed `nemo` package folder:

    nemo/collections/common/parts/utils.py               (Snake, HalfSnake, ClampActivation, masks)
    nemo/collections/tts/modules/audio_codec_modules.py  (HiFiGANEncoder, GroupFiniteScalarQuantizer, ...)

Their framework imports are replaced by small stubs, visible only while the two files run (sys.modules is
restored, so a real NeMo in the same interpreter is not disturbed); `typecheck` never changes values, so an
identity decorator computes what NeMo computes. `NemoCodec` recomposes NeMo's `AudioCodecModel` inference
methods line for line around those modules, with NeMo's state-dict names.
"""
from __future__ import annotations

import contextlib
import glob
import importlib.util
import linecache
import logging
import re
import sys
import types
import zipfile
from pathlib import Path

import torch
from torch import nn

UTILS = "nemo/collections/common/parts/utils.py"
CODEC_MODULES = "nemo/collections/tts/modules/audio_codec_modules.py"
WHEEL_GLOB = "nemo_toolkit-*.whl"


class _Source:
    """Reads `nemo/...py` files from a wheel or from the folder that holds the `nemo` package."""

    def __init__(self, path: Path):
        self.path = path = Path(path).resolve()
        self.zip = zipfile.ZipFile(path) if path.is_file() and zipfile.is_zipfile(path) else None
        if self.zip is None:
            # the package folder itself (.../site-packages/nemo) or its parent
            self.root = path.parent if path.name == "nemo" and (path / "collections").is_dir() else path
            if not (self.root / CODEC_MODULES).is_file():
                raise FileNotFoundError(f"{path}: neither a nemo-toolkit wheel nor a nemo package folder")

    def read(self, rel: str) -> str:
        return self.zip.read(rel).decode("utf-8") if self.zip else (self.root / rel).read_text(encoding="utf-8")

    def version(self) -> str:
        if self.zip:  # nemo_toolkit-3.0.0-py3-none-any.whl
            return self.path.name.split("-")[1] if self.path.name.count("-") >= 2 else "unknown"
        parts = dict(re.findall(r"^(MAJOR|MINOR|PATCH|PRE_RELEASE)\s*=\s*['\"]?([^'\"\n]*)['\"]?", self.read("nemo/package_info.py"), re.M))
        return ".".join(parts.get(k, "?") for k in ("MAJOR", "MINOR", "PATCH")) + parts.get("PRE_RELEASE", "")

    def where(self, rel: str) -> str:  # a file name inspect/linecache can key on (torch.jit.script reads the source)
        return f"{self.path}/{rel}" if self.zip else str(self.root / rel)


def find_nemo_source(explicit: str | Path | None = None) -> Path:
    """A wheel or nemo package folder: `explicit`, else .devicecarry/'s wheel, else the oracle venv's installed
    nemo, else an installed nemo found without importing it."""
    if explicit:
        return Path(explicit)
    repo = Path(__file__).resolve().parents[1]
    for pattern in (str(repo / ".devicecarry" / WHEEL_GLOB), str(repo / "parity/oracle/.venv/lib/python*/site-packages/nemo")):
        if found := sorted(glob.glob(pattern)):
            return Path(found[-1])
    spec = importlib.util.find_spec("nemo")
    if spec and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    raise FileNotFoundError("no NeMo source: run benchmarks/device_prep.sh (puts the nemo-toolkit wheel in .devicecarry/), "
                            "or `make oracle`, or pass the wheel / a nemo package folder explicitly")


def ensure_einops(near: Path) -> str:
    """Import einops (NeMo's files use it; the GPU image has it, our CPU venv does not), else make it importable
    from a wheel beside `near` (zipimport reads pure-Python wheels) or from the site-packages folder an installed
    nemo sits in. Returns where it came from."""
    if importlib.util.find_spec("einops") is not None:
        import einops

        return f"installed einops {einops.__version__}"
    near = Path(near).resolve()
    folder = near.parent if near.is_file() or near.name == "nemo" else near
    if wheels := sorted(glob.glob(str(folder / "einops-*.whl"))):
        sys.path.insert(0, wheels[-1])
        import einops

        return f"einops {einops.__version__} from {Path(wheels[-1]).name}"
    if (folder / "einops" / "__init__.py").is_file():  # this one package of that site-packages, not the whole folder
        spec = importlib.util.spec_from_file_location("einops", str(folder / "einops" / "__init__.py"),
                                                      submodule_search_locations=[str(folder / "einops")])
        sys.modules["einops"] = mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return f"einops {mod.__version__} from {folder / 'einops'}"
    raise ModuleNotFoundError(f"einops is needed by NeMo's codec modules: none installed and none beside {near}")


# ----------------------------------------------------------------------------------------------
# stubs for the framework imports
# ----------------------------------------------------------------------------------------------
class _Anything:
    """Neural-type tags (NeuralType(...), AudioSignal(), ...): built in NeMo's decorators, never used for computing."""

    def __init__(self, *args, **kwargs):
        pass


def _unavailable(name: str) -> type:
    """Framework classes only the modules we never build use (mel front ends, SSL models)."""

    def refuse(*args, **kwargs):
        raise NotImplementedError(f"{name} is part of the NeMo framework, which nemo_from_wheel does not load")

    return type(name, (), {"__init__": refuse, "from_pretrained": classmethod(refuse)})


class typecheck:  # noqa: N801  NeMo's name
    """NeMo's @typecheck(...) checks argument names and tags outputs; values are untouched."""

    def __init__(self, input_types=None, output_types=None, ignore_collections=False):
        pass

    def __call__(self, fn):
        return fn


class NeuralModule(nn.Module):
    """nn.Module plus typing/serialization mixins the codec never calls in inference (NeMo's `freeze` only on
    the SSL discriminator's model, which is never built here)."""
    input_types = output_types = None


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
        "nemo", "nemo.core", "nemo.core.classes", "nemo.collections", "nemo.collections.asr", "nemo.collections.audio",
        "nemo.collections.audio.parts", "nemo.collections.audio.parts.utils", "nemo.collections.common",
        "nemo.collections.common.parts", "nemo.collections.tts", "nemo.collections.tts.modules")}
    transforms = "nemo.collections.audio.parts.utils.transforms"
    stubs.update({
        "nemo.core.classes.common": mod("nemo.core.classes.common", typecheck=typecheck),
        "nemo.core.classes.module": mod("nemo.core.classes.module", NeuralModule=NeuralModule),
        "nemo.core.neural_types": mod("nemo.core.neural_types", _TagModule),
        "nemo.core.neural_types.elements": mod("nemo.core.neural_types.elements", _TagModule),
        "nemo.core.neural_types.neural_type": mod("nemo.core.neural_types.neural_type", NeuralType=_Anything),
        "nemo.utils": mod("nemo.utils", logging=log),
        "nemo.collections.asr.modules": mod("nemo.collections.asr.modules",
                                            AudioToMelSpectrogramPreprocessor=_unavailable("AudioToMelSpectrogramPreprocessor")),
        transforms: mod(transforms, MelSpectrogram=_unavailable("MelSpectrogram"), Resample=_unavailable("Resample")),
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
    code, filename = src.read(rel), src.where(rel)
    # the source in linecache with mtime None (never invalidated): torch.jit.script and inspect find it
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
    module = types.ModuleType(name)
    module.__file__, module.__package__ = filename, name.rpartition(".")[0]
    sys.modules[name] = module
    exec(compile(code, filename, "exec"), module.__dict__)  # noqa: S102  NeMo's own released source
    return module


class NemoModules(types.SimpleNamespace):
    """utils, audio_codec_modules (the executed files), version, source, einops."""


_CACHE: dict[str, NemoModules] = {}


def load(source: str | Path | None = None) -> NemoModules:
    """NeMo's utils.py and audio_codec_modules.py, executed from `source` (see find_nemo_source)."""
    path = find_nemo_source(source)
    if (key := str(Path(path).resolve())) not in _CACHE:
        src = _Source(path)
        einops_from = ensure_einops(path)
        names = ("nemo.collections.common.parts.utils", "nemo.collections.tts.modules.audio_codec_modules")
        with _sandboxed({**_stub_modules(), **dict.fromkeys(names)}):
            utils, codec = _exec_file(src, UTILS, names[0]), _exec_file(src, CODEC_MODULES, names[1])
        _CACHE[key] = NemoModules(utils=utils, audio_codec_modules=codec, version=src.version(), source=str(src.path), einops=einops_from)
    return _CACHE[key]


# ----------------------------------------------------------------------------------------------
# NeMo's AudioCodecModel inference, recomposed around the modules
# ----------------------------------------------------------------------------------------------
class NemoCodec(nn.Module):
    """NeMo 3.0.0 `AudioCodecModel`'s inference path (nemo/collections/tts/models/audio_codec.py): same submodule
    names, same construction order (encoder, quantizer, decoder: a seed gives the weights NeMo's own constructor
    gives; each built as hydra's instantiate does, the class named by _target_), same inference methods and keywords (encode, decode and their parts)."""

    def __init__(self, cfg: dict, mods: NemoModules):
        super().__init__()
        self.mods = mods
        self.sample_rate, self.samples_per_frame = cfg["sample_rate"], cfg["samples_per_frame"]
        for name in ("audio_encoder", "vector_quantizer", "audio_decoder"):
            section = cfg[name]
            cls = getattr(mods.audio_codec_modules, section["_target_"].rsplit(".", 1)[-1])
            setattr(self, name, cls(**{k: v for k, v in section.items() if k != "_target_"}))
        self.eval()

    @property
    def dtype(self):
        return next(self.parameters()).dtype

    def pad_audio(self, audio, audio_len, samples_per_frame):
        num_frames = audio_len / samples_per_frame
        num_frames = torch.where(audio_len % samples_per_frame == 0, num_frames, torch.ceil(num_frames))
        padded_len = samples_per_frame * num_frames.int()
        return nn.functional.pad(audio, (0, padded_len.max().item() - audio.shape[1])), padded_len

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
        return self.quantize(encoded=encoded, encoded_len=encoded_len), encoded_len

    def decode(self, tokens, tokens_len):
        dequantized = self.dequantize(tokens=tokens, tokens_len=tokens_len).to(self.dtype)
        return self.decode_audio(inputs=dequantized, input_len=tokens_len)
