"""Audio I/O (nanocodec/fileio/audio.py): int PCM, mono, soxr resampling, unreadable files, trim, write."""
import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from nanocodec.fileio import audio
from nanocodec.errors import InvalidInputError, NanoCodecError
from parity import fixtures

SR = 22050


def tone(n, rate, freq=440.0, amp=0.5):
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.float32)


def test_float_wav_is_read_exactly():
    clip = audio.read(fixtures.FIXTURES / "audio" / "speech_0p5s.wav")
    assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    assert np.array_equal(clip.samples, fixtures.read_input("speech_0p5s"))
    assert (clip.sample_rate, clip.source_sample_rate, clip.source_channels) == (SR, SR, 1)
    assert clip.num_samples == clip.source_frames == 11025 and clip.duration_s == 0.5


@pytest.mark.parametrize("subtype, scale", [("PCM_16", 2**15), ("PCM_32", 2**31), ("PCM_U8", 2**7)])
def test_int_pcm_becomes_float(tmp_path, subtype, scale):
    path = tmp_path / "x.wav"
    x = tone(1000, SR)
    sf.write(path, x, SR, subtype=subtype)
    ints, _ = sf.read(path, dtype="int32")  # what the file stores, left-aligned in int32
    got = audio.read(path).samples
    assert got.dtype == np.float32 and np.abs(got).max() <= 1.0
    np.testing.assert_allclose(got, ints / 2**31, atol=1e-7)
    np.testing.assert_allclose(got, x, atol=1.5 / scale)


def test_to_float32_scales_integer_arrays():
    assert np.array_equal(audio.to_float32(np.array([-32768, 0, 16384], np.int16)), np.array([-1, 0, 0.5], np.float32))
    assert np.array_equal(audio.to_float32(np.array([-(2**31), 2**30], np.int32)), np.array([-1, 0.5], np.float32))
    assert np.array_equal(audio.to_float32(np.array([0, 128, 192], np.uint8)), np.array([-1, 0, 0.5], np.float32))
    assert audio.to_float32(torch.zeros(3, dtype=torch.float64)).dtype == np.float32
    with pytest.raises(InvalidInputError):
        audio.to_float32(np.array(["a"]))


def test_stereo_is_mixed_to_mono_by_mean(tmp_path):
    left, right = tone(2000, SR, 440), tone(2000, SR, 660, 0.25)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], 1), SR, subtype="FLOAT")
    clip = audio.read(path)
    assert clip.source_channels == 2
    np.testing.assert_allclose(clip.samples, (left + right) / 2, atol=1e-7)
    both = audio.read(path, mono=False).samples
    assert both.shape == (2000, 2)


def test_44k_stereo_flac_is_resampled_with_soxr_vhq(tmp_path):
    n44 = 44100
    x44 = tone(n44, 44100, 1000)
    path = tmp_path / "in.flac"
    sf.write(path, np.stack([x44, x44], 1), 44100, subtype="PCM_24")
    clip = audio.read(path, SR)
    assert (clip.sample_rate, clip.source_sample_rate, clip.source_channels, clip.source_frames) == (SR, 44100, 2, n44)
    assert clip.duration_s == 1.0
    expect = soxr.resample(sf.read(path, dtype="float32")[0].mean(1).astype(np.float32), 44100, SR, quality="VHQ")
    assert np.array_equal(clip.samples, expect) and clip.num_samples == SR
    # a clean 1 kHz tone survives resampling (away from the filter's edges)
    ref = tone(SR, SR, 1000)[1000:-1000]
    err = clip.samples[1000:-1000] - ref
    assert 10 * np.log10((ref**2).sum() / (err**2).sum()) > 60
    assert audio.RESAMPLE_QUALITY == "VHQ"
    # tensor helper and the same-rate no-op
    t, rate = audio.load(path, SR)
    assert rate == SR and torch.equal(t, torch.from_numpy(expect))
    assert audio.resample(x44, 44100, 44100) is x44


def test_one_sample_survives_downsampling():
    assert audio.resample(np.ones(1, np.float32), 44100, SR).shape == (1,)


def test_unreadable_inputs_raise_invalid_input(tmp_path):
    (tmp_path / "garbage.wav").write_bytes(b"not audio at all" * 10)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), SR)
    sf.write(tmp_path / "nan.wav", np.array([0.0, np.nan], np.float32), SR, subtype="FLOAT")
    cases = {
        tmp_path / "garbage.wav": "cannot read it as audio",
        tmp_path / "empty.wav": "no samples",
        tmp_path / "nan.wav": "NaN",
        tmp_path / "missing.wav": "no such file",
        tmp_path: "is a folder",
    }
    for path, match in cases.items():
        with pytest.raises(InvalidInputError, match=match) as info:
            audio.read(path)
        assert isinstance(info.value, (ValueError, NanoCodecError)) and str(path) in str(info.value)
    with pytest.raises(InvalidInputError, match="<data>|cannot read"):
        audio.read(b"\x00" * 100, name="clip.wav")


def test_trim():
    x = torch.arange(10.0).view(1, 1, 10)
    assert audio.trim(x, 4).shape == (1, 1, 4) and audio.trim(x, 40).shape == (1, 1, 10)
    with pytest.raises(InvalidInputError):
        audio.trim(x, -1)


def test_write_is_exact_atomic_and_deterministic(tmp_path):
    x = torch.from_numpy(tone(3000, SR)).view(1, 1, -1)
    a = audio.write(tmp_path / "a.wav", x, SR)
    b = audio.write(tmp_path / "b.wav", x[0], SR)
    data = a.read_bytes()
    assert data == b.read_bytes() and b"PEAK" not in data  # libsndfile's PEAK chunk holds a timestamp
    y, rate = sf.read(a, dtype="float32")
    assert rate == SR and np.array_equal(y, x.numpy().ravel())
    assert sf.info(audio.write(tmp_path / "c.wav", x, SR, subtype="PCM_16")).subtype == "PCM_16"
    flac = audio.write(tmp_path / "d.flac", x, SR)
    assert flac.read_bytes() == audio.write(tmp_path / "e.flac", x, SR).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav", "c.wav", "d.flac", "e.flac"]
    with pytest.raises(InvalidInputError, match="unknown audio format"):
        audio.write(tmp_path / "x.xyz", x, SR)
    with pytest.raises(InvalidInputError, match="mono"):
        audio.write(tmp_path / "x.wav", torch.zeros(2, 10), SR)


def test_resampled_length_is_soxrs_rounding():
    """n * target / orig rounded half up (soxr's one-shot output length), at least 1, across odd rates."""
    rng = np.random.default_rng(0)
    for orig, target in [(44100, 22050), (48000, 22050), (16000, 22050), (8000, 44100), (22050, 7), (11025, 22051)]:
        for n in [1, 2, 3, 5, 1763, int(rng.integers(1, 5000))]:
            got = len(soxr.resample(np.zeros(n, np.float32), orig, target, quality="VHQ"))
            assert audio.resampled_length(n, orig, target) == max(1, got), (orig, target, n)
    assert audio.resampled_length(5, 44100, 22050) == 3 and audio.resampled_length(1, 96000, 22050) == 1


def test_resample_takes_model_layout_tensors():
    """Tensors are time-last ([T], [B, T], [B, 1, T]; NeMo's [B, T]), each item resampled alone; with
    lengths, each item's valid prefix only, re-padded with zeros. numpy keeps soxr's [T] / [T, C]."""
    x = torch.from_numpy(np.stack([tone(4410, 44100, 440), tone(4410, 44100, 660, 0.25)]))
    alone = [audio.resample(x[i].numpy(), 44100, SR) for i in range(2)]
    y = audio.resample(x, 44100, SR)
    assert y.shape == (2, 2205) and y.dtype == torch.float32 and np.array_equal(y.numpy(), np.stack(alone))
    assert audio.resample(x[:, None], 44100, SR).shape == (2, 1, 2205)
    assert np.array_equal(audio.resample(x[0], 44100, SR).numpy(), alone[0])
    # ragged: NaN past a length is never read; new lengths round half up
    junk = x.clone()
    junk[1, 3001:] = float("nan")
    y, lens = audio.resample(junk, 44100, SR, lengths=torch.tensor([4410, 3001]))
    assert lens.dtype == torch.int64 and lens.tolist() == [2205, 1501] and y.shape == (2, 2205)
    assert np.array_equal(y[1, :1501].numpy(), audio.resample(x[1, :3001].numpy(), 44100, SR))
    assert torch.all(y[1, 1501:] == 0) and np.array_equal(y[0].numpy(), alone[0])
    # same rate: the input itself (with lengths: as given)
    assert audio.resample(x, SR, SR) is x
    same, same_len = audio.resample(x, SR, SR, lengths=[4410, 3])
    assert same is x and same_len.tolist() == [4410, 3]
    # the old numpy layout still holds: [T, C] channels together
    stereo = x.numpy().T.copy()
    assert audio.resample(stereo, 44100, SR).shape == (2205, 2)
    for bad, match in [((x, 0, SR), "orig_sr must be a positive whole number"), ((x, 44100.5, SR), "whole number"),
                       ((torch.zeros(2, 2, 100), 44100, SR), r"\[T, C\] channels"),
                       ((torch.zeros(100, dtype=torch.int16), 44100, SR), "to_float32")]:
        with pytest.raises(InvalidInputError, match=match):
            audio.resample(*bad)
    with pytest.raises(InvalidInputError, match="lengths"):
        audio.resample(x, 44100, SR, lengths=[5000, 1])
