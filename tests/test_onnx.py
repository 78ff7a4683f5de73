"""ONNX export and the torch-free ONNX Runtime path (contracts §9), against NeMo's recordings (§5).

Each fixture model is exported once per test run (session fixture `exported`, ~15-25 s a model on
the 2-core CI machine) and run with ONNX Runtime on one thread. References: NeMo's recorded tokens
and audio (tests/fixtures) where they exist, else our own offline float32 decode (streaming, slots,
ragged decoding: contracts §5). Lengths differ from the ones the graphs were traced with (3 frames,
and 3 frames less a third of one): the graphs' length axes are really dynamic.

Tolerances: tokens by the §5 rule (parity.compare: identical except at an FSQ rounding boundary);
audio <= 1e-5 max abs and >= 80 dB SNR (compare.AUDIO_MAX_ABS_TOL / AUDIO_MIN_SNR_DB). ONNX
Runtime's kernels (its own conv, sin, tanh) differ from torch's by float32 rounding only: measured
<= 3.2e-6 on audio over these models on an Intel Xeon.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

if os.environ.get("CI") != "true":  # under CI the onnx extra is installed: a missing one must fail
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from nanocodec import AudioCodecModel  # noqa: E402
from nanocodec.convert.converter import convert  # noqa: E402
from nanocodec.errors import CheckpointError, InvalidInputError, NotSupportedError  # noqa: E402
from nanocodec.onnx import OnnxCodec, command, layout  # noqa: E402
from nanocodec.onnx.export import export_onnx  # noqa: E402
from nanocodec.onnx.runtime import session_options  # noqa: E402
from parity import compare, fixtures  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CASES = {c.name: c for c in fixtures.model_cases()}
# the causal NanoCodec topology, and LFSC: non-causal decoder, reflect padding in encoder and decoder
MODELS = ("nano0p6_replicate", "lfsc")

pytestmark = pytest.mark.usefixtures("one_thread")


class Exported:
    def __init__(self, name: str, model: AudioCodecModel, folder: Path):
        self.name = name
        self.case = CASES[name]
        self.model = model  # the reference (NCW) torch model: our offline float32 path
        self.folder = folder
        self.codec = OnnxCodec.from_pretrained(folder, threads=1)


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """name -> Exported, each fixture model converted and exported once per test run. The first
    goes through the command (`nanocodec export`'s run), the others through export_onnx."""
    tmp = tmp_path_factory.mktemp("onnx")
    out = {}
    for name in MODELS:
        convert(str(CASES[name].nemo), str(tmp / name))
        model = AudioCodecModel.from_pretrained(tmp / name, backend="reference")
        if not out:
            args = _parse([str(tmp / name), str(tmp / f"{name}-onnx"), "--format", "onnx"])
            args.quiet = True
            assert command.run(args) == 0
        else:
            export_onnx(model, tmp / f"{name}-onnx", progress=False)
        out[name] = Exported(name, model, tmp / f"{name}-onnx")
    return out


def _parse(argv):
    import argparse

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


def _offline_decode(model, tokens, tokens_len=None) -> np.ndarray:
    audio, _ = model.decode(torch.from_numpy(np.asarray(tokens)), None if tokens_len is None else torch.from_numpy(tokens_len),
                            chunk_seconds=None)
    return audio.numpy()


def _assert_audio(ours, ref, what):
    ok, err, snr = compare.audio_ok(ours, ref)
    assert ok, f"{what}: max abs {err:.2e} (<= {compare.AUDIO_MAX_ABS_TOL}), SNR {snr:.1f} dB"


# ---- the folder ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_folder_holds_checked_graphs_and_config(exported, name):
    e = exported[name]
    config = json.loads((e.folder / layout.CONFIG_FILE).read_text())
    causal = e.model.config.decoder.causal
    files = {layout.ENCODER_FILE, layout.DECODER_FILE} | ({layout.DECODER_STEP_FILE} if causal else set())
    assert {p.name for p in e.folder.iterdir()} == files | {layout.CONFIG_FILE}
    assert config["config_sha256"] == e.model.config.sha256()
    assert config["config"] == e.model.config.to_dict()
    assert config["opset"] == layout.DEFAULT_OPSET
    for file in files:
        graph = onnx.load(str(e.folder / file))
        onnx.checker.check_model(graph)
        assert {o.domain or "ai.onnx": o.version for o in graph.opset_import}["ai.onnx"] == layout.DEFAULT_OPSET
    if causal:
        state = e.model.decoder.init_state(1)
        assert [s["name"] for s in config["state"]] == list(state)
        assert [s["shape"][1:] for s in config["state"]] == [list(t.shape[1:]) for t in state.values()]
        assert config["min_frames"] == {"encoder": 1, "decoder": 1}  # replicate / causal zero padding
    else:
        # LFSC pads with reflect: NeMo fails on fewer frames (tests/fixtures manifest "crashes")
        assert config["state"] == [] and config["min_frames"]["encoder"] > 1 and config["min_frames"]["decoder"] > 1


def test_raw_sessions_have_the_documented_interface(exported):
    """The graphs' own inputs and outputs (what a user without OnnxCodec sees): names, dtypes, and
    symbolic batch/length axes."""
    e = exported["nano0p6_replicate"]
    g = e.model.num_codebooks

    def io(args):
        return [(a.name, a.type, [d if isinstance(d, int) else "sym" for d in a.shape]) for a in args]

    enc = ort.InferenceSession(str(e.folder / layout.ENCODER_FILE), providers=["CPUExecutionProvider"])
    assert io(enc.get_inputs()) == [("audio", "tensor(float)", ["sym", 1, "sym"]), ("audio_len", "tensor(int64)", ["sym"])]
    assert io(enc.get_outputs()) == [("tokens", "tensor(int32)", ["sym", g, "sym"]), ("tokens_len", "tensor(int64)", ["sym"])]
    dec = ort.InferenceSession(str(e.folder / layout.DECODER_FILE), providers=["CPUExecutionProvider"])
    assert io(dec.get_inputs()) == [("tokens", "tensor(int32)", ["sym", g, "sym"]), ("tokens_len", "tensor(int64)", ["sym"])]
    assert io(dec.get_outputs()) == [("audio", "tensor(float)", ["sym", 1, "sym"]), ("audio_len", "tensor(int64)", ["sym"])]
    step = ort.InferenceSession(str(e.folder / layout.DECODER_STEP_FILE), providers=["CPUExecutionProvider"])
    names = list(e.model.decoder.init_state(1))
    assert [a.name for a in step.get_inputs()] == ["tokens"] + [layout.STATE_IN + n for n in names]
    assert [a.name for a in step.get_outputs()] == ["audio"] + [layout.STATE_OUT + n for n in names]
    assert all(a.type == "tensor(float)" and isinstance(a.shape[0], str) for a in step.get_inputs()[1:])


# ---- against NeMo's recordings -------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_items_match_nemo(exported, name):
    """Every recorded clip (lengths 1 sample to 4 s): tokens by the §5 rule, the decode of NeMo's
    tokens <= 1e-5; what NeMo refuses (reflect padding of too-short inputs) is refused."""
    e = exported[name]
    total = compare.TokenReport()
    refused = dict(e.case.refused)
    for item in e.case.inputs:
        audio = fixtures.read_input(item)
        if item in refused:
            with pytest.raises(InvalidInputError, match="reflect"):
                e.codec.encode(audio)
            continue
        ref = fixtures.read_ref(e.case, item)
        tokens, tokens_len = e.codec.encode(audio)
        assert tokens.dtype == np.int32 and tokens_len.dtype == np.int64
        rep = compare.compare_tokens(tokens, ref["tokens"], ref["prerounding"], ref["tokens_len"])
        assert rep.unexplained == 0, (item, rep.mismatches)
        total = total.merge(rep)
        decoded, decoded_len = e.codec.decode(ref["tokens"], ref["tokens_len"])
        assert decoded.dtype == np.float32 and decoded_len.tolist() == (ref["tokens_len"] * e.model.samples_per_frame).tolist()
        _assert_audio(decoded.reshape(ref["decoded"].shape), ref["decoded"], f"{name}/{item}")
    assert total.ok, f"explained boundary flips {total.explained} > {total.allowed_explained}"
    assert total.frames > 0
    for item in refused:  # also the ones this run never listed as inputs
        with pytest.raises(InvalidInputError, match="reflect"):
            e.codec.encode(fixtures.read_input(item))


def test_ragged_batches_match_nemo_items(exported):
    """NeMo's recorded ragged batches (one with junk past each length) and the same audio with
    NaN, huge values and a longer tensor past the lengths: each item gets NeMo's solo tokens."""
    e = exported["nano0p6_replicate"]
    spf = e.model.samples_per_frame
    total = compare.TokenReport()
    for batch in fixtures.batch_refs(e.case):
        ref = fixtures.read_ref(e.case, batch)
        lens = ref["audio_len"]
        frames = -(-lens // spf)
        junked = np.pad(ref["audio"], ((0, 0), (0, 3 * spf + 17)))
        past = np.arange(junked.shape[-1])[None, :] >= lens[:, None]
        junked[past] = np.where(np.arange(past.sum()) % 3 == 0, np.nan, 1e4)
        for audio in (ref["audio"], junked, junked[:, None, :]):
            tokens, tokens_len = e.codec.encode(audio, lens)
            assert tokens_len.tolist() == frames.tolist() and tokens.shape[-1] == frames.max()
            rep = compare.compare_tokens(tokens, ref["item_tokens"], ref["item_prerounding"], frames)
            assert rep.unexplained == 0, (batch, rep.mismatches)
            total = total.merge(rep)
        decoded, _ = e.codec.decode(ref["item_tokens"], frames)
        _assert_audio(decoded.reshape(ref["item_decoded"].shape), ref["item_decoded"], batch)
    assert total.ok


@pytest.mark.parametrize("name", MODELS)
def test_ragged_decode_is_batch_invariant(exported, name):
    """Each item of a ragged batch decodes as our offline float32 decode of it alone (<= 1e-5),
    with junk (even out-of-range ids) past each length; at lengths not traced."""
    e = exported[name]
    rng = np.random.default_rng(5)
    spf, g = e.model.samples_per_frame, e.model.num_codebooks
    low = e.codec.min_frames["decoder"]
    lens = np.array([low + 9, low, low + 4])
    tokens = rng.integers(0, e.model.codebook_size, (3, g, lens.max())).astype(np.int32)
    junk = tokens.copy()
    for i, n in enumerate(lens):
        junk[i, :, n:] = -7 if i % 2 else 10**6
    audio, audio_len = e.codec.decode(junk, lens)
    assert audio.shape == (3, 1, lens.max() * spf) and audio_len.tolist() == (lens * spf).tolist()
    for i, n in enumerate(lens):
        _assert_audio(audio[i : i + 1, :, : n * spf], _offline_decode(e.model, tokens[i : i + 1, :, :n]), f"item {i}")
        assert not audio[i, :, n * spf :].any()


# every other variant: NeMo's reflect encoder on the causal topology, 13 codebooks, 21.5 fps (1024
# spf), the 22/44 kHz audio codecs (HalfSnake and clamp in a non-causal decoder). ~20 s each on CI.
OTHER_VARIANTS = ("nano0p6_reflect", "nano1p78", "nano1p89", "audio22k", "audio44k")


@pytest.mark.parametrize("name", OTHER_VARIANTS)
def test_every_variant_exports_and_matches_nemo(name, tmp_path):
    case = CASES[name]
    source = fixtures.materialize(case, tmp_path)
    convert(str(source), str(tmp_path / name))
    model = AudioCodecModel.from_pretrained(tmp_path / name, backend="reference")
    export_onnx(model, tmp_path / "onnx", progress=False)
    codec = OnnxCodec.from_pretrained(tmp_path / "onnx", threads=1)
    item = next(i for i in ("speech_0p5s", "white_noise") if i in case.inputs)
    ref = fixtures.read_ref(case, item)
    tokens, _ = codec.encode(fixtures.read_input(item))
    rep = compare.compare_tokens(tokens, ref["tokens"], ref["prerounding"], ref["tokens_len"])
    assert rep.ok, rep.mismatches
    decoded, _ = codec.decode(ref["tokens"], ref["tokens_len"])
    _assert_audio(decoded.reshape(ref["decoded"].shape), ref["decoded"], f"{name}/{item}")
    if model.config.decoder.causal:
        dec = codec.stream_decoder(1)
        steps = [dec.step(ref["tokens"][:, :, i : i + n]) for i, n in ((0, 1), (1, 3), (4, 100))]
        _assert_audio(np.concatenate(steps, -1), _offline_decode(model, ref["tokens"]), f"{name} steps")
    else:
        with pytest.raises(NotSupportedError):
            codec.stream_decoder()


# ---- streaming through decoder_step.onnx ---------------------------------------------------------
def _step_sizes(total, seed):
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < total:
        sizes.append(int(rng.choice([1, 1, 2, 3, 5, 8])))
    return sizes


def test_stream_steps_equal_offline_decode(exported):
    """Any mix of step sizes, batch 1 and 3, through OnnxCodec and through the raw session with the
    state fed back by hand: the concatenation equals offline decode (<= 1e-5)."""
    e = exported["nano0p6_replicate"]
    ref = fixtures.read_ref(e.case, "speech_4s")
    tokens = ref["tokens"]  # NeMo's tokens of 4 s: 50 frames
    offline = _offline_decode(e.model, tokens)
    _assert_audio(offline, ref["decoded"].reshape(offline.shape), "offline torch decode vs NeMo")
    for seed, batch in ((0, 1), (1, 3)):
        toks = np.concatenate([np.roll(tokens, i, axis=-1) for i in range(batch)])
        want = np.concatenate([offline] + [_offline_decode(e.model, toks[i : i + 1]) for i in range(1, batch)])
        dec = e.codec.stream_decoder(batch_size=batch)
        out, at = [], 0
        for n in _step_sizes(tokens.shape[-1], seed):
            out.append(dec.step(toks[:, :, at : at + n]))
            at += n
        _assert_audio(np.concatenate(out, -1), want, f"OnnxCodec steps, batch {batch}")
    # the raw session: a user's own loop over onnx_config.json's state layout
    config = json.loads((e.folder / layout.CONFIG_FILE).read_text())
    session = ort.InferenceSession(str(e.folder / layout.DECODER_STEP_FILE), session_options(1),
                                   providers=["CPUExecutionProvider"])
    state = {s["input"]: np.zeros([1] + s["shape"][1:], np.float32) for s in config["state"]}
    out, at = [], 0
    for n in _step_sizes(tokens.shape[-1], 2):
        audio, *new = session.run(None, {"tokens": tokens[:, :, at : at + n].astype(np.int32), **state})
        assert audio.shape == (1, 1, tokens[:, :, at : at + n].shape[-1] * e.model.samples_per_frame)
        state = {s["input"]: v for s, v in zip(config["state"], new)}
        out.append(audio)
        at += n
    _assert_audio(np.concatenate(out, -1), offline, "raw decoder_step session")


def test_stream_slots(exported):
    """Contracts §8 through ONNX: inactive slots' rows are zero and their state untouched (their
    tokens, even out of range, ignored); after reset([i]) slot i equals a fresh stream (<= 1e-5)."""
    e = exported["nano0p6_replicate"]
    rng = np.random.default_rng(3)
    spf, g, size = e.model.samples_per_frame, e.model.num_codebooks, e.model.codebook_size
    streams = rng.integers(0, size, (3, g, 12)).astype(np.int32)
    fed = [[] for _ in range(3)]  # the tokens each slot has consumed since its last reset
    outs = [[] for _ in range(3)]
    dec = e.codec.stream_decoder(batch_size=3)
    plan = [(2, [True, True, True]), (1, [True, False, True]), (3, [False, True, True]), (2, [False, False, False]),
            (1, [True, True, False]), ("reset", [1]), (2, [True, True, True]), (1, np.array([True, False, True]))]
    at = [0, 0, 0]
    for n, active in plan:
        if n == "reset":
            dec.reset(active)
            for i in active:
                fed[i], outs[i] = [], []
            continue
        toks = np.full((3, g, n), size + 5, dtype=np.int32)  # out of range: must be ignored where inactive
        for i in range(3):
            if active[i]:
                toks[i] = streams[i, :, at[i] : at[i] + n]
        audio = dec.step(toks, active=active)
        assert audio.shape == (3, 1, n * spf)
        for i in range(3):
            if active[i]:
                fed[i].append(toks[i : i + 1])
                outs[i].append(audio[i : i + 1])
                at[i] += n
            else:
                assert not audio[i].any()
    for i in range(3):
        _assert_audio(np.concatenate(outs[i], -1), _offline_decode(e.model, np.concatenate(fed[i], -1)), f"slot {i}")
    with pytest.raises(InvalidInputError, match="out of range"):
        dec.step(np.full((3, g, 1), size, dtype=np.int32), active=[False, True, False])
    with pytest.raises(InvalidInputError, match="active"):
        dec.step(streams[:, :, :1], active=[1, 0, 1])
    with pytest.raises(InvalidInputError, match="slots"):
        dec.reset([3])
    with pytest.raises(InvalidInputError, match="batch_size=3"):
        dec.step(streams[:2, :, :1])
    with pytest.raises(NotSupportedError):
        exported["lfsc"].codec.stream_decoder()


# ---- input checks --------------------------------------------------------------------------------
def test_bad_inputs_are_refused_clearly(exported):
    e = exported["nano0p6_replicate"]
    c, g, size = e.codec, e.model.num_codebooks, e.model.codebook_size
    good = np.zeros((1, g, 3), dtype=np.int64)
    for bad, match in ((size, "out of range"), (-1, "out of range")):
        tokens = good.copy()
        tokens[0, 1, 2] = bad
        with pytest.raises(InvalidInputError, match=match):
            c.decode(tokens)
    tokens = good.copy()
    tokens[0, 0, 2] = size  # past the length: ignored, as in the torch API
    assert c.decode(tokens, [2]).audio_len.tolist() == [2 * e.model.samples_per_frame]
    with pytest.raises(InvalidInputError, match="codebooks"):
        c.decode(np.zeros((1, g + 1, 3), dtype=np.int32))
    with pytest.raises(InvalidInputError, match="integer"):
        c.decode(good.astype(np.float32))
    with pytest.raises(InvalidInputError, match="tokens_len"):
        c.decode(good, [4])
    audio = np.zeros(3000, dtype=np.float32)
    for value, match in ((np.nan, "NaN"), (40.0, "scaled")):
        bad = audio.copy()
        bad[5] = value
        with pytest.raises(InvalidInputError, match=match):
            c.encode(bad)
    with pytest.raises(InvalidInputError, match="float"):
        c.encode((audio * 32768).astype(np.int16))
    with pytest.raises(InvalidInputError, match="mono"):
        c.encode(np.zeros((1, 2, 3000), dtype=np.float32))
    with pytest.raises(InvalidInputError, match="audio_len"):
        c.encode(audio, [0])
    with pytest.raises(InvalidInputError, match="reflect"):
        exported["lfsc"].codec.decode(np.zeros((1, 8, 1), dtype=np.int32))
    with pytest.raises(CheckpointError, match="onnx_config.json"):
        OnnxCodec.from_pretrained(e.folder.parent / "nano0p6_replicate")  # a torch folder, not an export
    # float64 and float16 audio are read as float32, as the torch API casts to the model's dtype
    x = (0.1 * np.sin(np.arange(5000) / 7)).astype(np.float64)
    assert np.array_equal(c.encode(x).tokens, c.encode(x.astype(np.float32)).tokens)


def test_numpy_checks_agree_with_the_torch_api():
    from nanocodec import validation
    from nanocodec.onnx import checks

    assert checks.MAX_AUDIO_ABS == validation.MAX_AUDIO_ABS


def test_runtime_imports_no_torch(exported):
    """A deployment without torch: nanocodec.onnx and nanocodec.errors import numpy and onnxruntime
    only, and encode/decode/stream run (in a fresh interpreter)."""
    folder = exported["nano0p6_replicate"].folder
    code = f"""
import sys
import numpy as np
from nanocodec.errors import InvalidInputError
from nanocodec.onnx import OnnxCodec
codec = OnnxCodec.from_pretrained({str(folder)!r}, threads=1)
tokens, tokens_len = codec.encode(np.zeros(4000, dtype=np.float32))
audio, _ = codec.decode(tokens, tokens_len)
step = codec.stream_decoder(1).step(tokens[:, :, :1])
assert audio.shape[-1] == tokens.shape[-1] * codec.samples_per_frame and step.shape[-1] == codec.samples_per_frame
assert "torch" not in sys.modules, "torch was imported"
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_command_line_errors_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "nanocodec.onnx", str(tmp_path / "absent"), str(tmp_path / "out")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("export: error:"), result.stderr
    with pytest.raises(InvalidInputError, match="opset"):
        export_onnx(tmp_path / "absent", tmp_path / "out", opset=9)
