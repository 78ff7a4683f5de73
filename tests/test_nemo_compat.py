"""NeMo drop-in (nanocodec.nemo_compat.AudioCodecModel) against NeMo 3.0.0's committed outputs.

The references under tests/fixtures/refs/nano0p6_replicate are NeMo's own `encode`/`decode` results on
the committed `.nemo` (see tests/fixtures/manifest.json); tokens are judged by the contracts §5 rule.
"""
import inspect

import numpy as np
import pytest
import torch

from nanocodec import AudioCodecModel as NanoModel
from nanocodec.errors import CheckpointError, InvalidInputError, NotSupportedError
from nanocodec.compat.nemo import AudioCodecModel
from parity import compare, fixtures

BASE = next(c for c in fixtures.model_cases() if c.name == "nano0p6_replicate")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def codec(base_folder):
    return AudioCodecModel.from_pretrained(base_folder)


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


def assert_tokens(ours, ref, prerounding, tokens_len):
    rep = compare.compare_tokens(ours.numpy(), ref, prerounding, tokens_len)
    assert rep.ok, rep.to_dict()


def assert_audio(ours, ref):
    assert tuple(ours.shape) == tuple(ref.shape)
    ok, err, snr = compare.audio_ok(ours.numpy(), ref)
    assert ok, (err, snr)


@pytest.mark.parametrize("name", ["speech_0p5s", "len_1", "len_1765"])
def test_single_items_match_nemo(codec, name):
    ref = fixtures.read_ref(BASE, name)
    x = t(fixtures.read_input(name))[None]  # NeMo's [B, T]
    tokens, tokens_len = codec.encode(audio=x, audio_len=torch.tensor([x.shape[1]]))
    assert tokens.dtype == torch.int32 and tokens.shape == ref["tokens"].shape
    assert torch.equal(tokens_len, t(ref["tokens_len"]))
    assert_tokens(tokens, ref["tokens"], ref["prerounding"], ref["tokens_len"])

    audio, audio_len = codec.decode(tokens=t(ref["tokens"]), tokens_len=t(ref["tokens_len"]))
    assert audio.dim() == 2  # NeMo's [B, T], not [B, 1, T]
    assert_audio(audio, ref["decoded"])
    assert torch.equal(audio_len, t(ref["decoded_len"]))

    encoded, encoded_len = codec.encode_audio(audio=x, audio_len=torch.tensor([x.shape[1]]))
    assert compare.latent_rel_error(encoded.numpy(), ref["latents"]) <= compare.LATENT_REL_TOL
    assert torch.equal(encoded_len, t(ref["tokens_len"]))
    # NeMo's latents through our quantizer give NeMo's tokens
    assert_tokens(codec.quantize(encoded=t(ref["latents"]), encoded_len=t(ref["tokens_len"])),
                  ref["tokens"], ref["prerounding"], ref["tokens_len"])


def test_ragged_batch_with_junk_matches_nemo_by_default(codec):
    ref = fixtures.read_ref(BASE, "batch_junk")
    audio, audio_len = t(ref["audio"]), t(ref["audio_len"])
    assert codec.nemo_batch_compat is True
    tokens, tokens_len = codec.encode(audio=audio, audio_len=audio_len)
    assert torch.equal(tokens_len, t(ref["tokens_len"]))
    assert_tokens(tokens, ref["tokens"], ref["prerounding"], ref["tokens_len"])
    decoded, decoded_len = codec.decode(tokens=t(ref["tokens"]), tokens_len=t(ref["tokens_len"]))
    assert_audio(decoded, ref["decoded"])
    assert torch.equal(decoded_len, t(ref["decoded_len"]))
    # forward = decode(encode), in NeMo's shapes
    out, out_len = codec(audio=audio, audio_len=audio_len)
    again, again_len = codec.decode(tokens=tokens, tokens_len=tokens_len)
    assert out.shape == ref["decoded"].shape and torch.equal(out, again) and torch.equal(out_len, again_len)
    # the pieces compose like NeMo's: quantize(encode_audio) and decode_audio(dequantize)
    encoded, encoded_len = codec.encode_audio(audio=audio, audio_len=audio_len)
    assert torch.equal(codec.quantize(encoded=encoded, encoded_len=encoded_len), tokens)
    dequantized = codec.dequantize(tokens=tokens, tokens_len=tokens_len)
    assert dequantized.shape == encoded.shape and dequantized.dtype == torch.float32
    assert torch.equal(codec.decode_audio(inputs=dequantized, input_len=tokens_len)[0], again)


def test_batch_invariant_mode_matches_nemo_item_by_item(codec):
    ref = fixtures.read_ref(BASE, "batch_junk")
    solo = AudioCodecModel(codec.model, nemo_batch_compat=False)
    tokens, tokens_len = solo.encode(t(ref["audio"]), t(ref["audio_len"]))  # positional, too
    assert_tokens(tokens, ref["item_tokens"], ref["item_prerounding"], tokens_len.numpy())


def test_signatures_and_facts_are_nemos(codec):
    # NeMo 3.0.0 AudioCodecModel parameter names (callers pass them as keywords)
    expected = {
        "encode": ["audio", "audio_len", "sample_rate"],
        "encode_audio": ["audio", "audio_len", "sample_rate"],
        "forward": ["audio", "audio_len", "sample_rate"],
        "decode": ["tokens", "tokens_len"],
        "quantize": ["encoded", "encoded_len"],
        "dequantize": ["tokens", "tokens_len"],
        "decode_audio": ["inputs", "input_len"],
    }
    for name, params in expected.items():
        assert list(inspect.signature(getattr(codec, name)).parameters) == params, name
    assert (codec.sample_rate, codec.output_sample_rate, codec.samples_per_frame) == (22050, 22050, 1764)
    assert (codec.num_codebooks, codec.codebook_size) == (4, 4032)
    assert codec.dtype == torch.float32 and codec.device.type == "cpu"
    assert isinstance(codec.model, NanoModel) and codec.freeze() is codec and not codec.training
    assert all(not p.requires_grad for p in codec.parameters())


def test_errors(codec, base_folder):
    x = torch.zeros(1, 2000)
    codec.encode(audio=x, audio_len=torch.tensor([2000]), sample_rate=22050)  # the model's own rate is fine
    with pytest.raises(NotSupportedError, match="resample"):
        codec.encode(audio=x, audio_len=torch.tensor([2000]), sample_rate=44100)
    with pytest.raises(InvalidInputError):
        codec.encode(audio=x, audio_len=torch.tensor([3000]))
    with pytest.raises(InvalidInputError, match="shape"):
        codec.quantize(encoded=torch.zeros(1, 5, 3), encoded_len=torch.tensor([3]))
    with pytest.raises(InvalidInputError, match="out of range"):
        codec.decode(tokens=torch.full((1, 4, 2), 4032), tokens_len=torch.tensor([2]))
    with pytest.raises(InvalidInputError):
        AudioCodecModel(object())
    with pytest.raises(CheckpointError, match="convert"):
        AudioCodecModel.from_pretrained(fixtures.FIXTURES / "models" / "nano0p6_replicate.nemo")
    assert AudioCodecModel.from_pretrained(base_folder, map_location="cpu").device.type == "cpu"
