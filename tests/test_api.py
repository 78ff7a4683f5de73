"""Public API (contracts §1, §2, §4): shapes, lengths, errors, loading and saving."""
import json
import shutil

import pytest
import torch

from conftest import BASE_NEMO
from nanocodec import AudioCodecModel
from nanocodec.errors import CheckpointError, InvalidInputError, NanoCodecError
from parity import fixtures


@pytest.fixture(scope="module")
def model(base_folder):
    return AudioCodecModel.from_pretrained(base_folder)


@pytest.fixture(scope="module")
def speech():
    return torch.from_numpy(fixtures.read_input("speech_0p5s"))


def test_shapes_and_lengths(model, speech):
    spf = model.samples_per_frame
    a, la = model.encode(speech)
    b, lb = model.encode(speech[None])
    c, lc = model.encode(speech[None, None])
    assert torch.equal(a, b) and torch.equal(a, c)
    assert a.dtype == torch.int32 and la.dtype == torch.int64
    assert a.shape == (1, model.num_codebooks, -(-len(speech) // spf)) and la.tolist() == [a.shape[-1]]
    audio, audio_len = model.decode(a, la)
    assert audio.shape == (1, 1, a.shape[-1] * spf) and audio_len.tolist() == [a.shape[-1] * spf]
    # ragged: frames past each item's length are 0, lengths are ceil(len/spf)
    lens = torch.tensor([len(speech), 1, spf + 1], dtype=torch.int32)
    batch = speech[None].repeat(3, 1)
    tokens, tokens_len = model.encode(batch, lens)
    assert tokens_len.tolist() == [a.shape[-1], 1, 2]
    assert torch.all(tokens[1, :, 1:] == 0) and torch.all(tokens[2, :, 2:] == 0)
    out = model(batch, lens)
    assert torch.equal(out.tokens, tokens) and out.audio_len.tolist() == (tokens_len * spf).tolist()
    assert torch.all(out.audio[1, :, spf:] == 0)  # NeMo masks decoded samples past the length


def test_ragged_batch_ignores_samples_past_length(model, speech):
    lens = torch.tensor([len(speech), 3000])
    clean = speech[None].repeat(2, 1)
    clean[1, 3000:] = 0
    junk = clean.clone()
    junk[1, 3000:] = torch.rand(len(speech) - 3000) - 0.5
    assert torch.equal(model.encode(clean, lens).tokens, model.encode(junk, lens).tokens)
    # with nemo_batch_compat the junk leaks into the last frames, as in NeMo
    assert not torch.equal(model.encode_latents(clean, lens, nemo_batch_compat=True).latents,
                           model.encode_latents(junk, lens, nemo_batch_compat=True).latents)


@pytest.mark.parametrize(
    "audio, audio_len, match",
    [
        (torch.zeros(0), None, "empty"),
        (torch.zeros(2, 0), None, "empty"),
        (torch.zeros(2, 2, 100), None, "mono"),
        (torch.zeros(1, 1, 1, 100), None, "shape"),
        (torch.zeros(100, dtype=torch.int16), None, "float"),
        (torch.tensor([0.0, float("nan"), 0.0]), None, "NaN"),
        (torch.tensor([0.0, float("inf")]), None, "NaN or Inf"),
        (torch.zeros(2, 100), torch.tensor([0, 100]), r"\[1, 100\]"),
        (torch.zeros(2, 100), torch.tensor([101, 100]), r"\[1, 100\]"),
        (torch.zeros(2, 100), torch.tensor([100]), "shape"),
        (torch.zeros(2, 100), torch.tensor([50.0, 100.0]), "integers"),
        ("not audio", None, "torch.Tensor"),
    ],
)
def test_bad_audio_is_invalid_input(model, audio, audio_len, match):
    with pytest.raises(InvalidInputError, match=match):
        model.encode(audio, audio_len)


def test_nan_past_length_is_ignored(model):
    audio = torch.zeros(1, 3000)
    audio[0, 2000:] = float("nan")
    tokens, _ = model.encode(audio, torch.tensor([2000]))
    assert tokens.shape[-1] == 2


@pytest.mark.parametrize(
    "tokens, tokens_len, match",
    [
        (torch.full((1, 4, 3), 4032), None, "out of range"),
        (torch.full((1, 4, 3), -1), None, "out of range"),
        (torch.zeros(1, 3, 3, dtype=torch.int64), None, "codebooks"),
        (torch.zeros(1, 4, 0, dtype=torch.int64), None, "empty"),
        (torch.zeros(1, 4, 3), None, "integer"),
        (torch.zeros(1, 4, 3, dtype=torch.int64), torch.tensor([4]), r"\[1, 3\]"),
    ],
)
def test_bad_tokens_are_invalid_input(model, tokens, tokens_len, match):
    with pytest.raises(InvalidInputError, match=match):
        model.decode(tokens, tokens_len)


def test_tokens_past_length_may_hold_padding(model):
    tokens = torch.full((1, 4, 3), -1)
    tokens[0, :, :2] = 7
    audio, audio_len = model.decode(tokens, torch.tensor([2]))
    assert audio_len.tolist() == [2 * model.samples_per_frame]


def test_reflect_model_refuses_too_short_input(tmp_path):
    from nanocodec.convert.converter import convert
    from parity.oracle.derive import derive_reflect

    convert(str(derive_reflect(BASE_NEMO, tmp_path / "r.nemo")), str(tmp_path / "r"))
    m = AudioCodecModel.from_pretrained(tmp_path / "r")
    with pytest.raises(InvalidInputError, match="reflect"):
        m.encode(torch.zeros(3 * m.samples_per_frame))
    m.encode(torch.zeros(4 * m.samples_per_frame))  # NeMo handles 4 frames (it crashes on <= 3)


def test_save_and_load_roundtrip(model, tmp_path):
    model.save_pretrained(tmp_path / "a")
    model.save_pretrained(tmp_path / "b")
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    again = AudioCodecModel.from_pretrained(tmp_path / "a")
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(InvalidInputError, match="overwrite"):
        model.save_pretrained(tmp_path / "a")
    half = AudioCodecModel.from_pretrained(tmp_path / "a", dtype=torch.float16)
    assert half.dtype == torch.float16 and half.quantizer.levels.dtype == torch.int32


def test_from_pretrained_refuses_nemo_named_safetensors(tmp_path, base_folder):
    from nanocodec.fileio import tensorfile

    (tmp_path / "model.safetensors").write_bytes(tensorfile.to_bytes({"audio_encoder.pre_conv.conv.bias": torch.zeros(2)}))
    shutil.copy(base_folder / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="NeMo-named.*python -m nanocodec.convert"):
        AudioCodecModel.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda c: c.__setitem__("extra", 1), "unknown key 'extra'"),
        (lambda c: c["encoder"].__setitem__("foo", 1), "unknown key 'encoder.foo'"),
        (lambda c: c.__setitem__("format_version", 2), "format_version"),
        (lambda c: c.__setitem__("model_type", "dac"), "model_type"),
        (lambda c: c["decoder"].__setitem__("up_sample_rates", [7, 7, 6, 3, 3]), "up_sample_rates"),
        (lambda c: c["encoder"].__setitem__("pad_mode", "circular"), "pad_mode"),
        (lambda c: c["quantizer"].__setitem__("num_groups", 3), "encoded_dim"),
    ],
)
def test_bad_config_is_checkpoint_error(tmp_path, base_folder, edit, match):
    shutil.copytree(base_folder, tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    edit(cfg)
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=match):
        AudioCodecModel.from_pretrained(tmp_path / "m")


def test_weights_that_do_not_fit_are_checkpoint_errors(tmp_path, base_folder, model):
    from nanocodec.fileio import tensorfile

    state = {k: v.clone() for k, v in model.state_dict().items()}
    cases = {
        "missing": ({k: v for k, v in state.items() if k != "decoder.post_conv.bias"}, "missing"),
        "unexpected": ({**state, "decoder.extra": torch.zeros(1)}, "unexpected"),
        "shape": ({**state, "decoder.post_conv.bias": torch.zeros(2)}, "shape"),
        "nan": ({**state, "decoder.post_conv.bias": torch.tensor([float("nan")])}, "NaN"),
        "dtype": ({**state, "decoder.post_conv.bias": torch.zeros(1, dtype=torch.int32)}, "dtype"),
    }
    for name, (tensors, match) in cases.items():
        folder = tmp_path / name
        shutil.copytree(base_folder, folder)
        (folder / "model.safetensors").write_bytes(tensorfile.to_bytes(tensors))
        with pytest.raises(CheckpointError, match=match):
            AudioCodecModel.from_pretrained(folder)


def test_errors_share_one_base():
    assert issubclass(InvalidInputError, NanoCodecError) and issubclass(InvalidInputError, ValueError)
    assert issubclass(CheckpointError, NanoCodecError)


def test_numpy_input_accepted(model, speech):
    assert torch.equal(model.encode(speech.numpy()).tokens, model.encode(speech).tokens)


def _solo_reference(model, x):
    """Our own offline single-item path (the reference for batched paths, contracts §5): tokens and the
    FSQ pre-rounding values the boundary rule needs."""
    latents, frames = model.encode_latents(x, chunk_seconds=None)
    pre = model.quantizer.prerounding(latents)
    return model.quantizer.encode(latents, frames), pre.reshape(pre.shape[0], -1, pre.shape[-1])


def test_encode_resamples_each_valid_prefix_at_another_rate(model, speech):
    """sample_rate= (contracts §1): each item's first audio_len[i] samples are resampled alone with
    nanocodec.audio.resample (soxr VHQ), to n * 22050 / 44100 rounded half up; tokens_len follows; the
    rest of the tensor (NaN here) is never read; decode gives the model's rate."""
    from nanocodec import audio
    from parity import compare

    x44 = torch.from_numpy(audio.resample(speech.numpy(), 22050, 44100))  # 22050 samples at 44.1 kHz
    lens = [22050, 7001]
    batch = torch.full((2, 22050), float("nan"))
    batch[0], batch[1, :7001] = x44, x44[:7001]
    tokens, tokens_len = model.encode(batch, torch.tensor(lens), sample_rate=44100)
    new_lens = [audio.resampled_length(n, 44100, 22050) for n in lens]
    assert new_lens == [11025, 3501]  # 7001 / 2 = 3500.5 rounds up
    spf = model.samples_per_frame
    assert tokens_len.tolist() == [-(-n // spf) for n in new_lens] == [7, 2]
    for i, n in enumerate(lens):
        alone = audio.resample(x44[:n].numpy(), 44100, 22050)
        assert len(alone) == new_lens[i]
        ref, pre = _solo_reference(model, torch.from_numpy(alone))
        f = int(tokens_len[i])
        assert compare.compare_tokens(tokens[i : i + 1, :, :f].numpy(), ref.numpy(), pre.numpy()).ok, i
        assert torch.all(tokens[i, :, f:] == 0)
    out = model(batch, torch.tensor(lens), sample_rate=44100)
    assert torch.equal(out.tokens, tokens) and out.audio_len.tolist() == (tokens_len * spf).tolist()
    # the model's own rate (any integral spelling) resamples nothing
    same = model.encode(speech, sample_rate=22050.0).tokens
    assert torch.equal(same, model.encode(speech).tokens)
    for bad in (0, -8000, 44100.5, "44100", True):
        with pytest.raises(InvalidInputError, match="sample_rate must be a positive whole number"):
            model.encode(speech, sample_rate=bad)


def test_encode_and_decode_run_under_the_precision_policy(model, speech):
    """contracts §10: float32 runs with TF32 off unless the model or an enclosing scope opts in; the
    flags are set for the call only (restored afterwards). The flags exist without a GPU."""
    from nanocodec import precision

    seen = []
    decoder_forward = model.decoder.forward

    def spy(*args, **kwargs):
        seen.append(torch.backends.cudnn.conv.fp32_precision)
        return decoder_forward(*args, **kwargs)

    before = precision.flags()
    tokens, tokens_len = model.encode(speech)
    model.decoder.forward = spy
    try:
        model.decode(tokens, tokens_len, chunk_seconds=None)
        with precision.precision_scope("cpu", allow_tf32=True):
            model.decode(tokens, tokens_len, chunk_seconds=None)
        model.allow_tf32 = True
        model.decode(tokens, tokens_len, chunk_seconds=None)
    finally:
        model.allow_tf32 = None
        del model.decoder.forward
    assert seen == ["ieee", "tf32", "tf32"]
    assert precision.flags() == before
