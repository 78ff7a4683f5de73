"""Corpus tokenization (nanocodec/apps/corpus.py): manifest, shards, determinism, resume, crashes."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from conftest import ROOT
from nanocodec import AudioCodecModel
from nanocodec.fileio import audio, token_files
from nanocodec.apps import corpus as tk
from nanocodec.errors import InvalidInputError
from parity import compare, fixtures

SHARD, BATCH = 3, 2


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(base_folder):
    model = AudioCodecModel.from_pretrained(base_folder)
    model.folder = base_folder  # what the tests pass as --model
    return model


def make_corpus(root: Path) -> Path:
    """Short files of every kind (rates, channels, int PCM, nesting) plus files to skip or fail."""
    src = fixtures.FIXTURES / "audio"
    root.mkdir(parents=True)
    (root / "b" / "deep").mkdir(parents=True)
    for name in ("len_1", "len_1763", "len_1764"):
        shutil.copy(src / f"{name}.wav", root / f"{name}.wav")
    shutil.copy(src / "len_1765.wav", root / "b" / "len_1765.wav")
    speech = fixtures.read_input("speech_0p5s")
    up = soxr.resample(speech, 22050, 44100)
    sf.write(root / "b" / "stereo44k.flac", np.stack([up, 0.5 * up], 1), 44100, subtype="PCM_16")
    sf.write(root / "b" / "deep" / "int16.wav", speech[:5000], 22050, subtype="PCM_16")
    (root / "b" / "corrupt.wav").write_bytes(b"RIFF....WAVEjunk" * 8)
    sf.write(root / "empty.wav", np.zeros(0, np.float32), 22050)
    (root / "notes.txt").write_text("not audio, not listed")
    shutil.copy(src / "len_1.wav", root / ".hidden.wav")
    return root


def run(model, corpus, out, **kw):
    kw.setdefault("shard_size", SHARD)
    kw.setdefault("batch_size", BATCH)
    return tk.tokenize(corpus, out, model, model_ref=str(model.folder), progress=False, log=lambda m: None, **kw)


def snapshot(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / tk.MANIFEST).read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory):
    """An uninterrupted run: the bytes every resumed run must reproduce."""
    work = tmp_path_factory.mktemp("tokenize")
    corpus = make_corpus(work / "corpus")
    out = work / "ref"
    result = run(model, corpus, out)
    return corpus, out, result, snapshot(out)


def test_manifest_shards_and_errors(model, reference):
    corpus, out, result, _ = reference
    listed = tk.list_audio(corpus)
    assert listed == sorted(listed) and ".hidden.wav" not in listed and "notes.txt" not in listed
    assert listed == ["b/corrupt.wav", "b/deep/int16.wav", "b/len_1765.wav", "b/stereo44k.flac",
                      "empty.wav", "len_1.wav", "len_1763.wav", "len_1764.wav"]
    assert (result.files, result.shards, result.encoded) == (8, 3, 6)
    assert sorted(p for p, _ in result.failed) == ["b/corrupt.wav", "empty.wav"]
    entries = manifest(out)
    assert [e["path"] for e in entries] == [p for p in listed if p not in ("b/corrupt.wav", "empty.wav")]
    for i, e in enumerate(entries):
        assert list(e) == list(tk.MANIFEST_FIELDS)
        assert e["shard"] == tk.shard_name(listed.index(e["path"]) // SHARD) and e["key"] == e["path"]
        assert e["frames"] == math.ceil(e["num_samples"] / model.samples_per_frame)
        clip = audio.read(corpus / e["path"], model.sample_rate)
        assert e["num_samples"] == clip.num_samples and e["duration_s"] == round(clip.duration_s, 6)
        assert e["sha256"] == tk.sha256_file(corpus / e["path"])
    flac = next(e for e in entries if e["path"] == "b/stereo44k.flac")
    assert flac["num_samples"] == 11025 and flac["duration_s"] == 0.5
    errors = [json.loads(line) for line in (out / tk.ERRORS).read_text().splitlines()]
    assert [(e["path"], e["shard"]) for e in errors] == [("b/corrupt.wav", "shard-000000.safetensors"),
                                                         ("empty.wav", "shard-000001.safetensors")]
    assert "cannot read" in errors[0]["error"] and "no samples" in errors[1]["error"]
    assert "0x" not in (out / tk.ERRORS).read_text()  # no object addresses: deterministic
    assert sorted(p.name for p in out.iterdir()) == [
        ".tokenize.lock", "errors.jsonl", "manifest.jsonl", "shard-000000.safetensors", "shard-000001.safetensors",
        "shard-000002.safetensors", "tokenize.json"]
    shard = token_files.read(out / "shard-000000.safetensors")
    assert sorted(shard.tokens) == ["b/deep/int16.wav", "b/len_1765.wav"]
    assert shard.config_sha256 == model.config.sha256() and shard.metadata["shard"] == "shard-000000.safetensors"
    assert shard.model == str(Path(model.folder).resolve())


def test_tokens_equal_encoding_each_file_alone(model, reference):
    """Batching inside a shard (by length, zero-padded) must give every file its solo tokens."""
    corpus, out, _, _ = reference
    for e in manifest(out):
        got = token_files.read(out / e["shard"]).tokens[e["key"]]
        x = audio.load(corpus / e["path"], model.sample_rate)[0]
        latents, frames = model.encode_latents(x)
        solo = model.quantizer.encode(latents, frames)
        pre = model.quantizer.prerounding(latents)
        rep = compare.compare_tokens(got[None].numpy(), solo.numpy(), pre.reshape(1, -1, pre.shape[-1]).numpy())
        assert rep.ok, (e["path"], rep.to_dict())
        assert rep.explained == 0  # identical in practice with this model


def test_same_input_same_bytes_and_finished_run_is_skipped(model, reference, tmp_path):
    corpus, out, _, ref = reference
    again = tmp_path / "again"
    run(model, corpus, again)
    assert snapshot(again) == ref
    calls = []
    orig = tk.encode_batch
    tk.encode_batch = lambda *a: calls.append(1) or orig(*a)
    try:
        res = run(model, corpus, again)
    finally:
        tk.encode_batch = orig
    assert (res.shards_skipped, res.encoded, calls) == (3, 0, [])
    assert snapshot(again) == ref


def crash_copy(reference, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(reference[1], out)
    return out


def resume(model, reference, out):
    calls = []
    orig = tk.encode_batch
    tk.encode_batch = lambda m, clips: calls.append(len(clips)) or orig(m, clips)
    try:
        res = run(model, reference[0], out)
    finally:
        tk.encode_batch = orig
    assert snapshot(out) == reference[3], "a resumed run must write what an uninterrupted run writes"
    return res, calls


def test_resume_after_crash_before_manifest_lines(model, reference, tmp_path):
    out = crash_copy(reference, tmp_path)
    lines = (out / tk.MANIFEST).read_text().splitlines(keepends=True)
    keep = [ln for ln in lines if "shard-000002" not in ln]
    torn = next(ln for ln in lines if "shard-000002" in ln)[:40]  # a crash mid-append
    (out / tk.MANIFEST).write_text("".join(keep) + torn)
    (out / ".shard-000002.safetensors.tmp-abc123").write_bytes(b"half a shard")
    res, calls = resume(model, reference, out)
    assert res.shards_skipped == 2 and res.encoded == 2 and sum(calls) == 2


def test_resume_redoes_a_missing_middle_shard_and_restores_order(model, reference, tmp_path):
    out = crash_copy(reference, tmp_path)
    (out / "shard-000001.safetensors").unlink()
    res, calls = resume(model, reference, out)
    assert res.shards_skipped == 2 and sum(calls) == 2  # shard 1 holds len_1 and len_1763 (empty.wav failed)


def test_resume_never_duplicates(model, reference, tmp_path):
    out = crash_copy(reference, tmp_path)
    lines = (out / tk.MANIFEST).read_text().splitlines(keepends=True)
    (out / tk.MANIFEST).write_text("".join(lines + lines[:1]))  # shard 0 listed twice
    with open(out / tk.ERRORS, "a") as f:
        f.write('{"path": "len_1.wav", "sha256": null, "shard": "shard-000001.safetensors", "error": "x"}\n')
    res, _ = resume(model, reference, out)
    assert res.shards_skipped == 1
    paths = [e["path"] for e in manifest(out)]
    assert len(paths) == len(set(paths))


def test_changed_file_is_reencoded(model, reference, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(reference[0], corpus)
    out = tmp_path / "out"
    shutil.copytree(reference[1], out)
    untouched = (out / "shard-000000.safetensors").stat().st_mtime_ns
    sf.write(corpus / "len_1764.wav", fixtures.read_input("speech_0p5s")[:3000], 22050, subtype="FLOAT")
    res = run(model, corpus, out)
    assert res.shards_skipped == 2 and res.encoded == 2  # shard 2: len_1763.wav and len_1764.wav
    fresh = tmp_path / "fresh"
    run(model, corpus, fresh)
    assert snapshot(out) == snapshot(fresh)
    entry = next(e for e in manifest(out) if e["path"] == "len_1764.wav")
    assert entry["sha256"] == tk.sha256_file(corpus / "len_1764.wav") and entry["num_samples"] == 3000
    assert (out / "shard-000000.safetensors").stat().st_mtime_ns == untouched


def test_corpus_changes_regroup_and_drop_stale_shards(model, reference, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(reference[0], corpus)
    out = tmp_path / "out"
    shutil.copytree(reference[1], out)
    for name in ("len_1.wav", "len_1763.wav", "len_1764.wav"):
        (corpus / name).unlink()
    run(model, corpus, out)
    fresh = tmp_path / "fresh"
    run(model, corpus, fresh)
    assert snapshot(out) == snapshot(fresh) and not (out / "shard-000002.safetensors").exists()


def test_an_item_the_model_refuses_is_reported_and_spares_its_batch(model, reference, tmp_path):
    """e.g. a reflect-padded model refuses items that are too short: only that item is skipped."""
    orig = tk.encode_batch

    def picky(m, clips):
        if any(len(c) == 1 for c in clips):
            raise InvalidInputError("too short for this model")
        return orig(m, clips)

    tk.encode_batch = picky
    try:
        res = run(model, reference[0], tmp_path / "out")
    finally:
        tk.encode_batch = orig
    assert sorted(p for p, _ in res.failed) == ["b/corrupt.wav", "empty.wav", "len_1.wav"]
    errors = (tmp_path / "out" / tk.ERRORS).read_text()
    assert "len_1.wav: too short for this model" in errors
    ref = {e["path"]: e for e in manifest(reference[1])}
    got = manifest(tmp_path / "out")
    assert [e["path"] for e in got] == [p for p in ref if p != "len_1.wav"]
    assert all(e == ref[e["path"]] for e in got)


def test_settings_are_bound_to_the_output_folder(model, reference, tmp_path):
    out = crash_copy(reference, tmp_path)
    with pytest.raises(InvalidInputError, match="shard_size"):
        run(model, reference[0], out, shard_size=SHARD + 1)
    other = tmp_path / "other"
    other.mkdir()
    (other / "something.txt").write_text("x")
    with pytest.raises(InvalidInputError, match="not a tokenize output"):
        run(model, reference[0], other)
    with pytest.raises(InvalidInputError, match="no audio files"):
        run(model, other, tmp_path / "none")
    with pytest.raises(InvalidInputError, match="not a folder"):
        run(model, other / "something.txt", tmp_path / "none")


def test_one_writer_per_output_folder(model, reference, tmp_path):
    import fcntl

    out = crash_copy(reference, tmp_path)
    with open(out / tk.LOCK, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        with pytest.raises(InvalidInputError, match="another"):
            run(model, reference[0], out)
    assert snapshot(out) == reference[3]


def test_sigkill_mid_run_then_resume(model, reference, tmp_path):
    """A real crash: SIGKILL the CLI after its first shard, resume, nothing lost or duplicated."""
    corpus, _, _, ref = reference
    out = tmp_path / "out"
    script = (
        "import sys, time\n"
        "import nanocodec.apps.corpus as tk\n"
        "orig = tk.encode_batch\n"
        "def slow(m, clips):\n"
        "    time.sleep(1.0)\n"
        "    return orig(m, clips)\n"
        "tk.encode_batch = slow\n"
        "from nanocodec.apps.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    cmd = [sys.executable, "-c", script, "tokenize", str(corpus), "-o", str(out), "--model",
           str(model.folder), "--shard-size", str(SHARD), "--batch-size", str(BATCH), "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / tk.MANIFEST).exists() and (out / tk.MANIFEST).read_text().count("\n") >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert len(manifest(out)) < len(manifest(reference[1]))
    res, _ = resume(model, reference, out)
    assert res.shards_skipped >= 1
