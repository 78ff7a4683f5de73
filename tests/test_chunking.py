"""Chunked offline processing (`chunk_seconds`): same results as whole-input processing.

Reference: our own whole-input float32 path (contracts §5: chunked paths use the token rule and
the 1e-5 audio bound against offline single-pass decoding).
"""
import pytest
import torch

from nanocodec import AudioCodecModel
from nanocodec.errors import InvalidInputError
from parity import compare, fixtures


@pytest.fixture(scope="module")
def model(base_folder):
    return AudioCodecModel.from_pretrained(base_folder)


@pytest.mark.parametrize("seconds", [0.08, 0.5, 1.3])
def test_chunked_encode_and_decode_equal_whole(model, seconds):
    speech = torch.from_numpy(fixtures.read_input("speech_11s"))
    audio = torch.stack([speech, speech.flip(0)])  # batch 2, equal lengths
    whole_latents, frames = model.encode_latents(audio)
    chunked_latents, _ = model.encode_latents(audio, chunk_seconds=seconds)
    assert compare.latent_rel_error(chunked_latents.numpy(), whole_latents.numpy()) <= compare.LATENT_REL_TOL
    whole = model.quantizer.encode(whole_latents, frames)
    chunked, _ = model.encode(audio, chunk_seconds=seconds)
    pre = model.quantizer.prerounding(whole_latents).flatten(1, 2)
    assert compare.compare_tokens(chunked.numpy(), whole.numpy(), pre.numpy()).ok
    lens = torch.tensor([frames[0], frames[0] - 7])  # decode lengths may differ: masking still applies
    a = model.decode(whole, lens).audio
    b = model.decode(whole, lens, chunk_seconds=seconds).audio
    assert compare.max_abs_error(b.numpy(), a.numpy()) <= compare.AUDIO_MAX_ABS_TOL
    assert torch.all(b[1, :, lens[1] * model.samples_per_frame :] == 0)


def test_ragged_batches_are_encoded_whole(model):
    speech = torch.from_numpy(fixtures.read_input("speech_4s"))
    audio = torch.stack([speech, speech])
    lens = torch.tensor([len(speech), 30000])
    assert torch.equal(model.encode(audio, lens, chunk_seconds=0.5).tokens, model.encode(audio, lens).tokens)


def test_bad_chunk_seconds(model):
    with pytest.raises(InvalidInputError, match="chunk_seconds"):
        model.encode(torch.zeros(4000), chunk_seconds=0)
