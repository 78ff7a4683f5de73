"""Every NeMo codec variant nanocodec runs (nanocodec/presets.py): NeMo's older codecs with the
non-causal `HiFiGANDecoder` (LFSC, the 22/44 kHz audio codecs), their config field, converter,
the streaming refusal, and the README's generated variants table.

Their equality with NeMo is tier-1 parity (tests/test_parity.py: the `lfsc`, `audio22k`, `audio44k`
fixtures, NeMo-built); here only what is not a comparison with a NeMo recording.
"""
import json

import pytest
import torch

from nanocodec.convert.archive import read_nemo
from nanocodec.convert.converter import convert
from nanocodec.convert.nemo_config import config_from_yaml
from nanocodec import AudioCodecModel
from nanocodec.config import NanoCodecConfig
from nanocodec.errors import CheckpointError, InvalidInputError, NotSupportedError
from nanocodec.presets import PRESETS
from parity import compare, fixtures

NONCAUSAL = ["lfsc", "audio22k", "audio44k"]
CASES = {c.name: c for c in fixtures.model_cases()}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("variants")
    out = {}
    for name in NONCAUSAL:
        convert(str(CASES[name].nemo), str(tmp / name))
        out[name] = AudioCodecModel.from_pretrained(tmp / name)
    return out


def speech(model, seconds=1.0):
    x = torch.from_numpy(fixtures.read_input("speech_4s"))
    return x[: int(seconds * model.sample_rate)]


@pytest.mark.parametrize("name", NONCAUSAL)
def test_config_is_noncausal_and_round_trips(models, name):
    cfg = models[name].config
    assert cfg.decoder.causal is False and cfg.decoder.nemo_class == "HiFiGANDecoder"
    assert cfg.decoder.pad_mode == "reflect" and cfg.decoder.n_groups_equal_to_out_channels is False
    d = json.loads(cfg.to_json())
    assert d["decoder"]["causal"] is False and d["format_version"] == 1
    assert NanoCodecConfig.from_json(cfg.to_json()) == cfg


def test_causal_configs_hash_as_before(base_folder):
    """The new field is written only when false: a NanoCodec config.json (and its sha256, which token
    files carry) is byte for byte what it was before the field existed."""
    text = (base_folder / "config.json").read_text()
    assert "causal" not in text
    cfg = NanoCodecConfig.from_json(text)
    assert cfg.decoder.causal is True and cfg.to_json() == text
    with pytest.raises(CheckpointError, match="causal"):
        d = json.loads(text)
        d["decoder"]["causal"] = "no"
        NanoCodecConfig.from_dict(d)


@pytest.mark.parametrize("name", NONCAUSAL)
def test_stream_decoder_and_chunked_decode_refused(models, name):
    model = models[name]
    with pytest.raises(NotSupportedError, match="causal"):
        model.stream_decoder()
    tokens, _ = model.encode(speech(model, 1.0))
    with pytest.raises(NotSupportedError, match="not causal"):
        model.decode(tokens, chunk_seconds=0.2)


@pytest.mark.parametrize("name", NONCAUSAL)
def test_stream_encoder_equals_offline(models, name):
    """The encoder is the same HiFiGANEncoder (pad_mode reflect): it still streams exactly."""
    model = models[name]
    x = speech(model, 1.0)[None]
    latents, frames = model.encode_latents(x)
    offline = model.quantizer.encode(latents, frames)
    enc = model.stream_encoder()
    outs = [enc.step(x[:, a : a + 1000]) for a in range(0, x.shape[-1], 1000)] + [enc.flush()]
    pre = model.quantizer.prerounding(latents).flatten(1, 2)
    report = compare.compare_tokens(torch.cat(outs, dim=-1).numpy(), offline.numpy(), pre.numpy())
    assert report.ok, report.mismatches[:5]


@pytest.mark.parametrize("name", NONCAUSAL)
def test_ragged_decode_is_batch_invariant(models, name):
    """Item i of a ragged batch decodes exactly as it does alone (NeMo's solo decode, which tier-1
    parity checks), whatever the tokens past its length."""
    model = models[name]
    tokens, _ = model.encode(speech(model, 1.0))
    need = model.decoder.min_frames()
    lengths = torch.tensor([tokens.shape[-1], max(need, tokens.shape[-1] // 2), need])
    batch = tokens.repeat(3, 1, 1)
    for i, n in enumerate(lengths.tolist()):
        batch[i, :, n:] = 7  # junk past each length
    audio, audio_len = model.decode(batch, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone, _ = model.decode(tokens[:, :, :n])
        err = compare.max_abs_error(audio[i : i + 1, :, : n * model.samples_per_frame].numpy(), alone.numpy())
        assert err <= compare.AUDIO_MAX_ABS_TOL, (i, err)
        assert not audio[i, :, n * model.samples_per_frame :].any()


def test_reflect_decoder_refuses_too_few_frames(models):
    """NeMo's reflect padding fails on fewer frames than its padding (LFSC: 3); we refuse clearly."""
    model = models["lfsc"]
    need = model.decoder.min_frames()
    assert need == 4
    with pytest.raises(InvalidInputError, match=f"at least {need} frames"):
        model.decode(torch.zeros(1, model.num_codebooks, need - 1, dtype=torch.int32))
    with pytest.raises(InvalidInputError, match=f"at least {need} frames"):  # in a ragged batch too
        model.decode(torch.zeros(2, model.num_codebooks, 8, dtype=torch.int32), torch.tensor([8, need - 1]))
    model.decode(torch.zeros(1, model.num_codebooks, need, dtype=torch.int32))


def test_converter_yaml_rules_for_hifigan_decoder():
    archive = read_nemo(CASES["lfsc"].nemo)
    config, notes = config_from_yaml(archive.config)
    assert config.decoder.causal is False
    assert any("pad_mode absent: NeMo 3.0.0 HiFiGANDecoder default 'reflect'" in n for n in notes)
    bad = json.loads(json.dumps(archive.config))
    bad["audio_decoder"]["causal"] = False  # ours, not a NeMo argument: it may not come from a yaml
    with pytest.raises(CheckpointError, match="causal"):
        config_from_yaml(bad)
    mel = json.loads(json.dumps(archive.config))
    mel["audio_encoder"] = {"_target_": "nemo.collections.tts.modules.audio_codec_modules.MultiBandMelEncoder"}
    with pytest.raises(CheckpointError, match="MultiBandMelEncoder"):
        config_from_yaml(mel)


@pytest.mark.parametrize("name", NONCAUSAL)
def test_nemo_named_safetensors_with_preset(tmp_path, models, name):
    """The safetensors re-export source (NeMo key names, no architecture) with an explicit architecture
    (`config=`, as `--preset` gives a released one: those are full size, the fixture is reduced-width)
    gives exactly the .nemo's weights."""
    from nanocodec.fileio import tensorfile

    fixture_config = models[name].config
    state = read_nemo(CASES[name].nemo).state_dict
    keep = {k: v for k, v in state.items() if k.startswith(("audio_encoder.", "audio_decoder."))}
    (tmp_path / "port").mkdir()
    (tmp_path / "port" / "model.safetensors").write_bytes(tensorfile.to_bytes(keep))
    convert(str(tmp_path / "port"), str(tmp_path / "out"), config=fixture_config)
    a = models[name].state_dict()
    b = AudioCodecModel.from_pretrained(tmp_path / "out").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_presets_cover_every_supported_family():
    families = {p.family for p in PRESETS.values()}
    assert families == {"NanoCodec", "Low Frame-rate Speech Codec", "NeMo Audio Codec"}
    for p in PRESETS.values():
        cfg = p.config()
        assert cfg.samples_per_frame == p.samples_per_frame and cfg.decoder.causal == (p.family == "NanoCodec")
    lfsc = PRESETS["lfsc-22khz-1.89kbps-21.5fps"].config()
    with torch.device("meta"):
        n = AudioCodecModel(lfsc).num_parameters()["total"]
    # the model card says 112.7M (NeMo counts weight-norm g vectors too: 112,697,458 with NeMo 3.0.0)
    assert round(n / 1e6, 1) == 112.7


def test_readme_variants_table_is_current():
    from parity import variants_table

    assert variants_table.main(["--check"]) == 0, "run: python -m parity.variants_table"
