"""NeMo 3.0.0's own codec modules, run without the NeMo framework (issue 7, CUDA half).

The GPU machine has torch but no NeMo and no network, and NeMo's framework (hydra, lightning, omegaconf,
lhotse, ...) is far too large to carry. The codec's computation lives in two plain PyTorch files, executed as
they are from the nemo-toolkit wheel (a zip) or from an installed `nemo` package folder (the CPU tests use the
oracle venv's). Their framework imports are replaced by stubs, visible only while the two files run (sys.modules
is restored, so a real NeMo in the same interpreter is not disturbed); `typecheck` never changes values, so an
identity decorator computes what NeMo computes. `NemoCodec` recomposes NeMo's `AudioCodecModel` inference
methods line for line around those modules, with NeMo's state-dict names.
"""
from __future__ import annotations

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

UTILS = "nemo/collections/common/parts/utils.py"  # Snake, HalfSnake, ClampActivation, masks
CODEC_MODULES = "nemo/collections/tts/modules/audio_codec_modules.py"  # HiFiGANEncoder, GroupFiniteScalarQuantizer, ...
WHEEL_GLOB = "nemo_toolkit-*.whl"


def _source_root(path: Path) -> tuple:
    """Where `nemo/...py` paths are read from (a wheel as a zipfile.Path, or the folder that holds the `nemo` package), and
    the nemo-toolkit version (the wheel's name, or the installed distribution's metadata folder beside the package)."""
    path = Path(path).resolve()
    if path.is_file() and zipfile.is_zipfile(path):  # nemo_toolkit-3.0.0-py3-none-any.whl
        return zipfile.Path(path), path.name.split("-")[1]
    root = path.parent if path.name == "nemo" else path
    if not (root / CODEC_MODULES).is_file():
        raise FileNotFoundError(f"{path}: neither a nemo-toolkit wheel nor a nemo package folder")
    dist = sorted(root.glob("nemo_toolkit-*.dist-info"))
    return root, dist[-1].name.removesuffix(".dist-info").split("-")[1] if dist else "unknown"


def find_nemo_source(explicit: str | Path | None = None) -> Path:
    """A wheel or nemo package folder: `explicit`, else .devicecarry/'s wheel, else the oracle venv's installed nemo."""
    if explicit:
        return Path(explicit)
    repo = Path(__file__).resolve().parents[1]
    for pattern in (str(repo / ".devicecarry" / WHEEL_GLOB), str(repo / "parity/oracle/.venv/lib/python*/site-packages/nemo")):
        if found := sorted(glob.glob(pattern)):
            return Path(found[-1])
    raise FileNotFoundError("no NeMo source: run benchmarks/device_prep.sh (puts the nemo-toolkit wheel in .devicecarry/), "
                            "or `make oracle`, or pass the wheel / a nemo package folder explicitly")


def ensure_einops(near: Path) -> str:
    """Import einops (NeMo's files use it; our CPU venv lacks it), else its package folder beside `near`: in the
    site-packages folder an installed nemo sits in, or in .devicecarry/ (device_prep.sh unpacks its wheel there). Only
    that one package is loaded, not the whole folder. Returns where it came from."""
    if importlib.util.find_spec("einops") is not None:
        import einops

        return f"installed einops {einops.__version__}"
    near = Path(near).resolve()
    init = (near.parent if near.is_file() or near.name == "nemo" else near) / "einops" / "__init__.py"
    if not init.is_file():
        raise ModuleNotFoundError(f"einops is needed by NeMo's codec modules: none installed and none beside {near}")
    spec = importlib.util.spec_from_file_location("einops", str(init), submodule_search_locations=[str(init.parent)])
    sys.modules["einops"] = mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return f"einops {mod.__version__} from {init.parent}"


# ----------------------------------------------------------------------------------------------
# stubs for the framework imports
# ----------------------------------------------------------------------------------------------
class _Anything:
    """Neural-type tags (NeuralType(...), AudioSignal(), ...) and @typecheck(...): built in NeMo's decorators, never
    used for computing; as a decorator it returns the function untouched (typecheck checks names, tags outputs)."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, fn):
        return fn


class _StubModule(types.ModuleType):
    """A stub package: any name not set on it is a tag."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything


def _unavailable(*names: str) -> dict:
    """Framework classes only the modules we never build use (mel front ends, SSL models): each refuses to be built."""

    def refuse(name):
        def fail(*args, **kwargs):
            raise NotImplementedError(f"{name} is part of the NeMo framework, which nemo_from_wheel does not load")

        return fail

    return {n: type(n, (), {"__init__": refuse(n), "from_pretrained": classmethod(refuse(n))}) for n in names}


def _stub_modules() -> dict[str, types.ModuleType]:
    """The modules NeMo's two files import from, and every package above them (imports resolve through sys.modules)."""
    log = logging.getLogger("nemo_from_wheel")
    log.setLevel(logging.WARNING)
    attrs = {"nemo.core.classes.common": {}, "nemo.core.neural_types.elements": {}, "nemo.core.neural_types.neural_type": {},
             # the codec modules call none of NeuralModule's typing/serialization mixins in inference
             "nemo.core.classes.module": {"NeuralModule": nn.Module}, "nemo.utils": {"logging": log},
             "nemo.collections.asr.modules": _unavailable("AudioToMelSpectrogramPreprocessor"),
             "nemo.collections.audio.parts.utils.transforms": _unavailable("MelSpectrogram", "Resample"),
             "nemo.collections.common.parts": {}, "nemo.collections.tts.modules": {},
             # transformers is only for the SSL discriminator; importing the real one costs seconds
             "transformers": _unavailable("AutoFeatureExtractor", "AutoModel", "Wav2Vec2BertModel")}
    stubs = {}
    for leaf, names in attrs.items():
        parts = leaf.split(".")
        for name in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
            stubs.setdefault(name, _StubModule(name)).__path__ = []
        stubs[leaf].__dict__.update(names)
    return stubs


def _exec_file(root, rel: str, name: str) -> types.ModuleType:
    code, filename = (root / rel).read_text(encoding="utf-8"), str(root / rel)
    # the source in linecache with mtime None (never invalidated): torch.jit.script and inspect find it
    linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
    module = types.ModuleType(name)
    module.__file__, module.__package__ = filename, name.rpartition(".")[0]
    sys.modules[name] = module
    exec(compile(code, filename, "exec"), module.__dict__)  # noqa: S102  NeMo's own released source
    return module


def load(source: str | Path | None = None) -> types.SimpleNamespace:
    """NeMo's utils.py and audio_codec_modules.py executed from `source` (see find_nemo_source): a namespace of
    utils, audio_codec_modules, version, source, einops (where einops came from)."""
    path = find_nemo_source(source)
    (root, version), einops_from = _source_root(path), ensure_einops(path)
    names = ("nemo.collections.common.parts.utils", "nemo.collections.tts.modules.audio_codec_modules")
    stubs = {**_stub_modules(), **dict.fromkeys(names)}
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        utils, codec = _exec_file(root, UTILS, names[0]), _exec_file(root, CODEC_MODULES, names[1])
    finally:  # the stubs are gone again, and whatever NeMo was imported before is back
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    return types.SimpleNamespace(utils=utils, audio_codec_modules=codec, version=version, source=str(Path(path).resolve()),
                                 einops=einops_from)


# ----------------------------------------------------------------------------------------------
# NeMo's AudioCodecModel inference, recomposed around the modules
# ----------------------------------------------------------------------------------------------
class NemoCodec(nn.Module):
    """NeMo 3.0.0 `AudioCodecModel`'s inference path (nemo/collections/tts/models/audio_codec.py): same submodule
    names, same construction order (encoder, quantizer, decoder: a seed gives the weights NeMo's own constructor
    gives; each built as hydra's instantiate does, the class named by _target_), its encode_audio / encode / decode
    with NeMo's keywords (quantize and decode_audio inlined)."""

    def __init__(self, cfg: dict, mods):
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

    def dequantize(self, tokens, tokens_len):
        tokens = self.mods.audio_codec_modules.rearrange(tokens, "B C T -> C B T")
        with self.mods.audio_codec_modules.default_precision(torch.float32):
            dequantized = self.vector_quantizer.decode(indices=tokens, input_len=tokens_len)
        return dequantized.to(self.dtype)

    def encode(self, audio, audio_len):
        encoded, encoded_len = self.encode_audio(audio=audio, audio_len=audio_len)
        with self.mods.audio_codec_modules.default_precision(torch.float32):  # quantize()
            tokens = self.vector_quantizer.encode(inputs=encoded, input_len=encoded_len)
        return self.mods.audio_codec_modules.rearrange(tokens, "C B T -> B C T"), encoded_len

    def decode(self, tokens, tokens_len):
        dequantized = self.dequantize(tokens=tokens, tokens_len=tokens_len)
        return self.audio_decoder(inputs=dequantized, input_len=tokens_len)  # decode_audio()
