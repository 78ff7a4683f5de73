"""The `nanocodec` command line end to end, and the examples, on the fixture model."""
import json
import os
import runpy
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from conftest import ROOT
from nanocodec import AudioCodecModel
from nanocodec.fileio import audio, token_files
from nanocodec.apps import cli
from parity import compare, fixtures

AUDIO = fixtures.FIXTURES / "audio"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(base_folder):
    return AudioCodecModel.from_pretrained(base_folder)


@pytest.fixture(scope="module")
def flac44(tmp_path_factory):
    """44.1 kHz stereo 16-bit FLAC, as users hand it in."""
    x = soxr.resample(fixtures.read_input("speech_0p5s"), 22050, 44100)
    path = tmp_path_factory.mktemp("in") / "speech 44k.flac"
    sf.write(path, np.stack([x, 0.8 * x], 1), 44100, subtype="PCM_16")
    return path


def nc(capsys, *args):
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_encode_decode_44k_stereo_flac(capsys, model, base_folder, flac44, tmp_path):
    tokens_path = tmp_path / "speech.safetensors"
    rc, _, err = nc(capsys, "encode", flac44, "-o", tokens_path, "--model", base_folder)
    assert rc == 0, err
    tf = token_files.read(tokens_path)
    clip = audio.read(flac44, 22050)
    assert clip.num_samples == 11025
    want, _ = model.encode(clip.tensor())
    assert torch.equal(tf.tokens["tokens"], want[0]) and tf.num_samples == {"tokens": 11025}
    meta = tf.metadata
    assert meta["model"] == str(base_folder.resolve()) and meta["config_sha256"] == model.config.sha256()
    assert (meta["sample_rate"], meta["samples_per_frame"], meta["source"]) == ("22050", "1764", flac44.name)
    assert json.loads(meta["lengths"]) == {"tokens": {"frames": 7, "num_samples": 11025}}
    # same input, same bytes
    again = tmp_path / "again.safetensors"
    assert nc(capsys, "encode", flac44, "-o", again, "--model", base_folder)[0] == 0
    assert again.read_bytes() == tokens_path.read_bytes()

    wav = tmp_path / "out.wav"
    rc, _, err = nc(capsys, "decode", tokens_path, "-o", wav)  # the model comes from the file
    assert rc == 0, err
    y, rate = sf.read(wav, dtype="float32")
    decoded, _ = model.decode(want)
    assert rate == 22050 and y.shape == (11025,) and np.array_equal(y, decoded[0, 0, :11025].numpy())
    full = tmp_path / "full.wav"
    assert nc(capsys, "decode", tokens_path, "-o", full, "--no-trim", "--subtype", "PCM_16")[0] == 0
    assert sf.info(full).frames == 7 * 1764 and sf.info(full).subtype == "PCM_16"

    rt = tmp_path / "rt.wav"
    assert nc(capsys, "roundtrip", flac44, "-o", rt, "--model", base_folder)[0] == 0
    assert rt.read_bytes() == wav.read_bytes()


def test_several_inputs_go_to_a_folder(capsys, model, base_folder, tmp_path):
    names = ["len_1", "len_1765", "speech_0p5s"]
    out = tmp_path / "tokens"
    rc, _, err = nc(capsys, "encode", *[AUDIO / f"{n}.wav" for n in names], "-o", out, "--model", base_folder,
                    "--batch-size", 2)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == [f"{n}.safetensors" for n in names]
    # batched by the CLI, each item against NeMo's recording of it alone (contracts §5 token rule:
    # a batch of 2 may sum in another order than a single item on some CPUs)
    case = next(c for c in fixtures.model_cases() if c.name == "nano0p6_replicate")
    for n in names:
        ref = fixtures.read_ref(case, n)
        got = token_files.read(out / f"{n}.safetensors").tokens["tokens"]
        assert compare.compare_tokens(got[None].numpy(), ref["tokens"], ref["prerounding"]).ok, n
    # a file with several items (a tokenize shard) decodes into a folder
    shard = token_files.read(out / "len_1765.safetensors")
    many = tmp_path / "many.safetensors"
    token_files.write(many, {"a/x.flac": shard.tokens["tokens"], "b": shard.tokens["tokens"]},
                      {"a/x.flac": 1765, "b": 1765}, token_files.header(model, str(base_folder)))
    assert nc(capsys, "decode", many, "-o", tmp_path / "wavs")[0] == 0
    assert sf.info(tmp_path / "wavs" / "a" / "x.wav").frames == 1765 and (tmp_path / "wavs" / "b.wav").exists()


def test_info(capsys, model, base_folder, tmp_path):
    rc, out, _ = nc(capsys, "info", base_folder, "--json")
    info = json.loads(out)
    assert rc == 0 and info["config_sha256"] == model.config.sha256()
    assert (info["sample_rate"], info["samples_per_frame"], info["num_codebooks"], info["codebook_size"]) == (22050, 1764, 4, 4032)
    assert info["parameters"]["total"] == sum(p.numel() for p in model.parameters())
    rc, out, _ = nc(capsys, "info", base_folder)
    assert rc == 0 and "frame_rate" in out and "12.5" in out
    tok = tmp_path / "t.safetensors"
    assert nc(capsys, "encode", AUDIO / "len_1765.wav", "-o", tok, "--model", base_folder)[0] == 0
    rc, out, _ = nc(capsys, "info", tok, "--json")
    assert rc == 0 and json.loads(out)["items"] == {"tokens": {"frames": 2, "num_samples": 1765}}


def test_tokenize_command(capsys, base_folder, tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    sf.write(corpus / "a.wav", fixtures.read_input("len_1765"), 22050)
    sf.write(corpus / "sub" / "b.flac", fixtures.read_input("len_1763"), 22050)
    (corpus / "sub" / "broken.wav").write_bytes(b"no")
    rc, _, err = nc(capsys, "tokenize", corpus, "-o", tmp_path / "out", "--model", base_folder, "--shard-size", 2)
    assert rc == 0, err
    assert "skipped sub/broken.wav" in err and "tokenized 2" in err and "h/s" in err
    lines = (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(ln)["path"] for ln in lines] == ["a.wav", "sub/b.flac"]


def test_convert_command_is_the_converter(capsys, base_folder, tmp_path):
    """`nanocodec convert` (for pip users, contracts §3) writes what `python -m convert` wrote for the
    suite's base folder, byte for byte; a bad checkpoint exits 2 with one line and writes nothing."""
    nemo = fixtures.FIXTURES / "models" / "nano0p6_replicate.nemo"
    rc, out, err = nc(capsys, "convert", nemo, tmp_path / "m")
    assert rc == 0, err
    assert "wrote" in out
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == (base_folder / "model.safetensors").read_bytes()
    assert (tmp_path / "m" / "config.json").read_bytes() == (base_folder / "config.json").read_bytes()
    bad = tmp_path / "bad.nemo"
    bad.write_bytes(b"not a tar at all" * 64)
    rc, _, err = nc(capsys, "convert", bad, tmp_path / "n")
    assert rc == 2 and err.count("\n") == 1 and "not a .nemo archive" in err
    assert not (tmp_path / "n").exists()


def test_user_errors_exit_2_with_one_line(capsys, model, base_folder, tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"garbage")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    empty = tmp_path / "empty"
    empty.mkdir()
    good = tmp_path / "good.safetensors"
    assert nc(capsys, "encode", AUDIO / "len_1.wav", "-o", good, "--model", base_folder)[0] == 0
    tf = token_files.read(good)
    alien = tmp_path / "alien.safetensors"
    token_files.write(alien, tf.tokens, tf.num_samples, {**tf.metadata, "config_sha256": "0" * 64})
    cases = [
        (["encode", tmp_path / "bad.wav", "-o", tmp_path / "x.safetensors", "--model", base_folder], "cannot read"),
        (["encode", tmp_path / "missing.wav", "-o", tmp_path / "x.safetensors", "--model", base_folder], "no such file"),
        (["encode", AUDIO / "len_1.wav", "-o", tmp_path / "x.safetensors"], "--model"),
        (["encode", AUDIO / "len_1.wav", "-o", tmp_path / "x.safetensors", "--model", empty], "config.json"),
        (["encode", AUDIO / "len_1.wav", AUDIO / "len_1.wav", "-o", tmp_path / "d", "--model", base_folder], "collide"),
        (["encode", AUDIO / "len_1.wav", "-o", tmp_path / "x.safetensors", "--model", base_folder, "--device", "nope"], "device"),
        (["decode", tmp_path / "bad.safetensors", "-o", tmp_path / "x.wav"], "safetensors"),
        (["decode", alien, "-o", tmp_path / "x.wav"], "config sha256"),
        (["decode", good, "-o", tmp_path / "x.xyz"], "unknown audio format"),
        (["decode", good, "-o", tmp_path / "noext"], "no audio file name: name a file such as"),
        (["roundtrip", AUDIO / "len_1.wav", "-o", tmp_path, "--model", base_folder], "is a folder: name a file"),
        (["roundtrip", AUDIO / "len_1.wav", "-o", tmp_path / "x.xyz", "--model", base_folder], "unknown audio format"),
        (["tokenize", AUDIO / "len_1.wav", "-o", tmp_path / "t", "--model", base_folder], "not a folder"),
    ]
    for args, match in cases:
        rc, out, err = nc(capsys, *args)
        assert rc == 2, (args, out, err)
        assert err.count("\n") == 1 and err.startswith("nanocodec: error: ") and match in err, (args, err)
        assert "Traceback" not in err
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "x.wav").exists()


def test_decode_into_a_new_folder(capsys, model, base_folder, tmp_path):
    """`-o newdir/` is a folder even when it does not exist yet (Path() drops the slash), for a shard of
    several items and for a single-item file; the single item of `encode` is named after its file."""
    tok = tmp_path / "speech.safetensors"
    assert nc(capsys, "encode", AUDIO / "len_1765.wav", "-o", tok, "--model", base_folder)[0] == 0
    tf = token_files.read(tok)
    shard = tmp_path / "shard-000001.safetensors"
    token_files.write(shard, {"a.flac": tf.tokens["tokens"], "sub/b.wav": tf.tokens["tokens"]},
                      {"a.flac": 1765, "sub/b.wav": 1765}, tf.metadata)
    rc, _, err = nc(capsys, "decode", shard, "-o", f"{tmp_path / 'newdir'}/")
    assert rc == 0, err
    assert sf.info(tmp_path / "newdir" / "a.wav").frames == 1765 and (tmp_path / "newdir" / "sub" / "b.wav").exists()
    rc, _, err = nc(capsys, "decode", tok, "-o", f"{tmp_path / 'other' / 'deeper'}/")
    assert rc == 0, err
    assert sf.info(tmp_path / "other" / "deeper" / "speech.wav").frames == 1765


def test_several_inputs_refuse_a_token_file_name(capsys, base_folder, tmp_path):
    out = tmp_path / "out.safetensors"
    rc, _, err = nc(capsys, "encode", AUDIO / "len_1.wav", AUDIO / "len_1765.wav", "-o", out, "--model", base_folder)
    assert rc == 2 and "must be a folder" in err and f"{tmp_path / 'out'}/" in err and err.count("\n") == 1
    assert not out.exists()
    # a trailing slash asks for a folder, even with one input
    rc, _, err = nc(capsys, "encode", AUDIO / "len_1.wav", "-o", f"{tmp_path / 'toks'}/", "--model", base_folder)
    assert rc == 0, err
    assert (tmp_path / "toks" / "len_1.safetensors").is_file()


def test_outputs_never_overwrite_inputs(capsys, base_folder, tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, fixtures.read_input("len_1765"), 22050, subtype="FLOAT")
    before = wav.read_bytes()
    for args in (["roundtrip", wav, "-o", wav], ["roundtrip", wav, "-o", tmp_path / "." / "a.wav"],
                 ["encode", wav, "-o", wav]):
        rc, _, err = nc(capsys, *args, "--model", base_folder)
        assert rc == 2 and "would destroy the input" in err and err.count("\n") == 1, (args, err)
    assert wav.read_bytes() == before


def test_one_bad_file_spares_the_others(capsys, model, base_folder, tmp_path):
    """A multi-file encode writes every file it can, reports each bad one naming it, exits 2."""
    loud = tmp_path / "loud.wav"
    sf.write(loud, np.full(3000, 300.0, np.float32), 22050, subtype="FLOAT")  # float WAV beyond [-1, 1]
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"no audio here")
    out = tmp_path / "tokens"
    rc, _, err = nc(capsys, "encode", AUDIO / "len_1765.wav", loud, broken, AUDIO / "len_1.wav", "-o", out,
                    "--model", base_folder, "--batch-size", 4)
    assert rc == 2
    assert sorted(p.name for p in out.iterdir()) == ["len_1.safetensors", "len_1765.safetensors"]
    errors = [ln for ln in err.splitlines() if ln.startswith("nanocodec: error: ")]
    assert len(errors) == 2, err
    assert f"{loud}: audio reaches |x| = 300" in errors[0] and "batch items" not in errors[0]
    assert str(broken) in errors[1] and "cannot read" in errors[1]
    assert "2 of 4 inputs encoded" in err
    # the loud file alone: one line, named, exit 2, nothing written
    rc, _, err = nc(capsys, "encode", loud, "-o", tmp_path / "loud.safetensors", "--model", base_folder)
    assert rc == 2 and err.count("\n") == 1 and str(loud) in err and not (tmp_path / "loud.safetensors").exists()
    rc, _, err = nc(capsys, "roundtrip", loud, "-o", tmp_path / "loud_rt.wav", "--model", base_folder)
    assert rc == 2 and err.count("\n") == 1 and str(loud) in err and "[-1, 1]" in err


def test_a_moved_model_folder_says_where_the_path_came_from(capsys, model, base_folder, tmp_path):
    import shutil

    moved = tmp_path / "model"
    shutil.copytree(base_folder, moved)
    tok = tmp_path / "t.safetensors"
    assert nc(capsys, "encode", AUDIO / "len_1765.wav", "-o", tok, "--model", moved)[0] == 0
    shutil.move(moved, tmp_path / "elsewhere")
    rc, _, err = nc(capsys, "decode", tok, "-o", tmp_path / "x.wav")
    assert rc == 2 and err.count("\n") == 1
    assert f"the model recorded in {tok}" in err and str(moved) in err and "pass --model" in err
    rc, _, err = nc(capsys, "decode", tok, "-o", tmp_path / "x.wav", "--model", tmp_path / "elsewhere")
    assert rc == 0, err


def test_help_lists_what_applies(capsys):
    def help_of(command):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        return capsys.readouterr().out

    info = help_of("info")
    assert "--revision" in info and "--json" in info and "rates" in info
    for option in ("--model", "--batch-size", "--device", "--dtype", "--quiet", "--tf32"):
        assert option not in info, option
    roundtrip = help_of("roundtrip")
    assert "Encode one audio file and decode it again" in roundtrip and "--batch-size" not in roundtrip
    assert "--tf32" in roundtrip and "--model" in roundtrip
    for command in ("encode", "decode", "tokenize"):
        text = help_of(command)
        assert "--batch-size" in text and "--tf32" in text, command
    assert "ONNX" in help_of("export")


def test_cli_hints_name_the_flag(capsys, base_folder, tmp_path):
    """The library's "pass overwrite=True" is "--overwrite" on the command line."""
    nemo = fixtures.FIXTURES / "models" / "nano0p6_replicate.nemo"
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    for args in (["convert", nemo, full], ["export", base_folder, full]):  # export: nanocodec/onnx/command.py
        rc, _, err = nc(capsys, *args)
        assert rc == 2 and err.count("\n") == 1 and "--overwrite" in err and "overwrite=True" not in err, (args, err)
    assert sorted(p.name for p in full.iterdir()) == ["keep.txt"]


def test_tf32_flag_is_recorded_under_the_policy(capsys, base_folder, tmp_path):
    """--tf32 opts in; on the CPU TF32 does not exist, so the record says False either way (contracts §10),
    and the flags are restored after the command."""
    from nanocodec import precision

    before = precision.flags()
    tok = tmp_path / "t.safetensors"
    assert nc(capsys, "encode", AUDIO / "len_1.wav", "-o", tok, "--model", base_folder, "--tf32")[0] == 0
    record = json.loads(token_files.read(tok).metadata["precision"])
    assert record["tf32"] is False and record["dtype"] == "float32" and record["device"] == "cpu"
    assert precision.flags() == before


def test_console_script_runs_as_a_module(base_folder, tmp_path):
    """What a user types: a fresh process, exit codes and stderr as promised."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ok = subprocess.run([sys.executable, "-m", "nanocodec.cli", "roundtrip", str(AUDIO / "len_1765.wav"),
                         "-o", str(tmp_path / "rt.wav"), "--model", str(base_folder)],
                        cwd=tmp_path, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert sf.info(tmp_path / "rt.wav").frames == 1765
    bad = subprocess.run([sys.executable, "-m", "nanocodec.cli", "decode", str(tmp_path / "nope.safetensors"),
                          "-o", str(tmp_path / "x.wav")], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


@pytest.mark.parametrize("example, args", [
    ("basic_encode_decode.py", ["{model}", "{audio}/speech_0p5s.wav", "{tmp}/out.wav"]),
    ("batch_processing.py", ["{model}", "{audio}/len_1765.wav", "{audio}/speech_0p5s.wav", "{audio}/len_1.wav"]),
    ("tokenize_corpus.py", ["{model}", "{corpus}", "{tmp}/tokens"]),
    ("streaming_inference.py", ["{model}", "{flac44}", "{tmp}/streamed.wav"]),
])
def test_examples_run(example, args, base_folder, flac44, tmp_path, capsys, monkeypatch):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n in ("len_1765", "len_1763"):
        sf.write(corpus / f"{n}.wav", fixtures.read_input(n), 22050)
    argv = [a.format(model=base_folder, audio=AUDIO, tmp=tmp_path, corpus=corpus, flac44=flac44) for a in args]
    monkeypatch.setattr(sys, "argv", [example, *argv])
    runpy.run_path(str(ROOT / "examples" / example), run_name="__main__")
    out = capsys.readouterr().out
    assert out.strip()
    assert "False" not in out  # batch_processing: batched tokens equal solo ones; streaming: within 1e-5
