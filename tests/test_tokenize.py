"""Corpus tokenization (nanocodec/apps/corpus.py): manifest, shards, determinism, resume, crashes, and
incremental runs (added, changed and deleted files; a format-1 folder migrating)."""
import contextlib
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
    shard_name0 = "shard-000000.safetensors"
    shard = token_files.read(out / shard_name0)
    assert sorted(shard.tokens) == ["b/deep/int16.wav", "b/len_1765.wav"]
    assert shard.config_sha256 == model.config.sha256() and shard.metadata["shard"] == "shard-000000.safetensors"
    assert shard.model == str(Path(model.folder).resolve())
    # the settings it ran under (contracts §10), in tokenize.json and in every shard
    record = {"dtype": "float32", "tf32": False, "cudnn_benchmark": False, "backend": model.backend,
              "device": "cpu", "torch": torch.__version__, "threads": 1}
    state = json.loads((out / tk.STATE).read_text())
    assert state["precision"] == record and (state["format_version"], state["next_shard"]) == (2, 3)
    assert json.loads(shard.metadata["precision"]) == record
    # a shard describes itself: its files' sha256 and durations, and its unreadable files
    assert json.loads(shard.metadata["sources"]) == {
        e["key"]: {"sha256": e["sha256"], "duration_s": e["duration_s"]} for e in entries if e["shard"] == shard_name0}
    assert [e["path"] for e in json.loads(shard.metadata["errors"])] == ["b/corrupt.wav"]


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


@contextlib.contextmanager
def counting():
    """Counts the items the engine encodes (a list of batch sizes)."""
    calls = []
    orig = tk.encode_batch
    tk.encode_batch = lambda m, clips: calls.append(len(clips)) or orig(m, clips)
    try:
        yield calls
    finally:
        tk.encode_batch = orig


def resume(model, reference, out):
    with counting() as calls:
        res = run(model, reference[0], out)
    assert snapshot(out) == reference[3], "a resumed run must write what an uninterrupted run writes"
    return res, calls


def test_resume_after_crash_before_manifest_lines(model, reference, tmp_path):
    """A shard renamed in is committed (it describes itself): lines lost with the crash are rebuilt."""
    out = crash_copy(reference, tmp_path)
    lines = (out / tk.MANIFEST).read_text().splitlines(keepends=True)
    keep = [ln for ln in lines if "shard-000002" not in ln]
    torn = next(ln for ln in lines if "shard-000002" in ln)[:40]  # a crash mid-append
    (out / tk.MANIFEST).write_text("".join(keep) + torn)
    (out / ".shard-000002.safetensors.tmp-abc123").write_bytes(b"half a shard")
    res, calls = resume(model, reference, out)
    assert (res.shards_skipped, res.encoded, calls) == (3, 0, [])


def test_resume_redoes_a_missing_middle_shard_and_restores_order(model, reference, tmp_path):
    out = crash_copy(reference, tmp_path)
    (out / "shard-000001.safetensors").unlink()
    res, calls = resume(model, reference, out)
    # shard 1 holds b/stereo44k.flac and len_1.wav (empty.wav fails again): redone under its name
    assert res.shards_skipped == 2 and sum(calls) == 2 and res.encoded == 2


def test_damaged_logs_never_duplicate(model, reference, tmp_path):
    out = crash_copy(reference, tmp_path)
    lines = (out / tk.MANIFEST).read_text().splitlines(keepends=True)
    (out / tk.MANIFEST).write_text("".join(lines + lines[:1]))  # shard 0 listed twice
    with open(out / tk.ERRORS, "a") as f:
        f.write('{"path": "len_1.wav", "sha256": null, "shard": "shard-000001.safetensors", "error": "x"}\n')
    res, calls = resume(model, reference, out)  # the shards hold the truth: the logs are rebuilt from them
    assert (res.shards_skipped, calls) == (3, [])
    paths = [e["path"] for e in manifest(out)]
    assert len(paths) == len(set(paths))


def write_tone(path: Path, n: int, freq: float) -> None:
    t = np.arange(n) / 22050
    # PCM_16: libsndfile writes a float WAV with a PEAK chunk that holds a timestamp
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 22050, subtype="PCM_16")


ADDED = {"a00.wav": 2000, "c/new.wav": 4000, "len_2.wav": 1, "zz.wav": 3000}  # sorted first, middle, last


def add_files(corpus: Path) -> None:
    for i, (name, n) in enumerate(ADDED.items()):
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        write_tone(corpus / name, n, 200.0 + 50 * i)


def grown(reference, tmp_path) -> tuple[Path, Path]:
    corpus = tmp_path / "corpus"
    shutil.copytree(reference[0], corpus)
    add_files(corpus)
    return corpus, crash_copy(reference, tmp_path)


def inodes(out: Path) -> dict:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("shard-*")}


def test_added_files_go_to_new_shards_and_only_they_are_encoded(model, reference, tmp_path):
    corpus, out = grown(reference, tmp_path)
    old = inodes(out)
    with counting() as calls:
        res = run(model, corpus, out)
    assert sum(calls) == res.encoded == 4  # only the new files (a00.wav sorts before every old one)
    assert (res.new, res.changed, res.removed, res.kept) == (4, 0, 0, 8)
    assert (res.files, res.shards, res.shards_skipped) == (12, 5, 3)
    now = snapshot(out)
    for name in ("shard-000000.safetensors", "shard-000001.safetensors", "shard-000002.safetensors"):
        assert now[name] == reference[3][name]  # the same bytes, the same file
    assert {k: v for k, v in inodes(out).items() if k in old} == old
    entries = manifest(out)
    assert entries[: len(manifest(reference[1]))] == manifest(reference[1])  # old lines as they were
    assert [(e["path"], e["shard"]) for e in entries[len(manifest(reference[1])):]] == [
        ("a00.wav", "shard-000003.safetensors"), ("c/new.wav", "shard-000003.safetensors"),
        ("len_2.wav", "shard-000003.safetensors"), ("zz.wav", "shard-000004.safetensors")]
    assert json.loads((out / tk.STATE).read_text())["next_shard"] == 5
    summary = res.summary(out)
    assert "4 new, 0 changed, 0 removed, 8 kept" in summary and "tokenized 4" in summary
    again = run(model, corpus, out)
    assert (again.encoded, again.shards_skipped, again.new, again.kept) == (0, 5, 0, 12) and snapshot(out) == now


def test_changed_file_rewrites_its_shard_copying_the_others(model, reference, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(reference[0], corpus)
    out = crash_copy(reference, tmp_path)
    untouched = inodes(out)
    sf.write(corpus / "len_1764.wav", fixtures.read_input("speech_0p5s")[:3000], 22050, subtype="FLOAT")
    with counting() as calls:
        res = run(model, corpus, out)
    assert (res.shards_skipped, res.encoded, calls) == (2, 1, [1])  # shard 2: len_1764.wav only
    assert (res.new, res.changed, res.removed, res.kept) == (0, 1, 0, 7)
    assert {k: untouched[k] for k in ("shard-000000.safetensors", "shard-000001.safetensors")} == \
        {k: v for k, v in inodes(out).items() if k != "shard-000002.safetensors"}
    entry = next(e for e in manifest(out) if e["path"] == "len_1764.wav")
    assert entry["sha256"] == tk.sha256_file(corpus / "len_1764.wav") and entry["num_samples"] == 3000
    old, new = (token_files.read(d / "shard-000002.safetensors") for d in (reference[1], out))
    assert torch.equal(new.tokens["len_1763.wav"], old.tokens["len_1763.wav"])  # copied
    assert new.tokens["len_1764.wav"].shape == (4, 2)
    x = audio.load(corpus / "len_1764.wav", model.sample_rate)[0]
    solo, _ = model.encode(x)
    assert torch.equal(new.tokens["len_1764.wav"], solo[0])  # a batch of one: the solo computation itself
    assert [e for e in manifest(out) if e["path"] != "len_1764.wav"] == \
        [e for e in manifest(reference[1]) if e["path"] != "len_1764.wav"]


def test_deleted_files_leave_their_shards_and_indices_are_never_reused(model, reference, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(reference[0], corpus)
    out = crash_copy(reference, tmp_path)
    before = inodes(out)
    for name in ("len_1.wav", "len_1763.wav", "len_1764.wav"):  # one from shard 1, all of shard 2
        (corpus / name).unlink()
    with counting() as calls:
        res = run(model, corpus, out)
    assert (calls, res.removed, res.kept, res.shards, res.shards_skipped) == ([], 3, 5, 2, 1)
    assert not (out / "shard-000002.safetensors").exists()
    assert inodes(out)["shard-000000.safetensors"] == before["shard-000000.safetensors"]
    shard1 = token_files.read(out / "shard-000001.safetensors")
    assert sorted(shard1.tokens) == ["b/stereo44k.flac"]
    assert torch.equal(shard1.tokens["b/stereo44k.flac"],
                       token_files.read(reference[1] / "shard-000001.safetensors").tokens["b/stereo44k.flac"])
    assert [e["path"] for e in manifest(out)] == ["b/deep/int16.wav", "b/len_1765.wav", "b/stereo44k.flac"]
    assert [json.loads(ln)["path"] for ln in (out / tk.ERRORS).read_text().splitlines()] == ["b/corrupt.wav", "empty.wav"]
    # a file added later gets a fresh index: shard 2 was used
    write_tone(corpus / "len_1.wav", 500, 300.0)
    res = run(model, corpus, out)
    assert res.new == 1 and [e["shard"] for e in manifest(out) if e["path"] == "len_1.wav"] == ["shard-000003.safetensors"]


def test_the_same_sequence_of_runs_gives_the_same_bytes(model, reference, tmp_path):
    outs = []
    for k in range(2):
        corpus = tmp_path / f"corpus{k}"
        shutil.copytree(reference[0], corpus)
        out = tmp_path / f"out{k}"
        run(model, corpus, out)
        add_files(corpus)
        run(model, corpus, out)
        (corpus / "b" / "len_1765.wav").unlink()
        write_tone(corpus / "zz.wav", 2500, 900.0)
        run(model, corpus, out)
        outs.append(snapshot(out))
    assert outs[0] == outs[1]


def downgrade(out: Path) -> None:
    """Make `out` look as the format-1 engine left it: shards without their own item records and a
    version-1 tokenize.json (same tokens, same manifest)."""
    for path in out.glob("shard-*.safetensors"):
        tf = token_files.read(path)
        meta = {k: v for k, v in tf.metadata.items() if k not in ("sources", "errors", "precision", "lengths")}
        token_files.write(path, tf.tokens, tf.num_samples, meta)
    state = json.loads((out / tk.STATE).read_text())
    for key in ("tf32", "next_shard", "precision"):
        del state[key]
    state["format_version"] = 1
    (out / tk.STATE).write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")


def test_a_format_1_folder_migrates(model, reference, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(reference[0], corpus)
    out = crash_copy(reference, tmp_path)
    downgrade(out)
    legacy = snapshot(out)
    with counting() as calls:
        res = run(model, corpus, out)
    assert (calls, res.kept, res.shards_skipped) == ([], 8, 3)
    state = json.loads((out / tk.STATE).read_text())
    assert state["format_version"] == 2 and state["next_shard"] == 3 and state["tf32"] is False
    assert all(snapshot(out)[n] == legacy[n] for n in legacy if n.startswith("shard-"))  # not rewritten
    assert manifest(out) == manifest(reference[1])
    add_files(corpus)
    sf.write(corpus / "len_1764.wav", fixtures.read_input("speech_0p5s")[:3000], 22050, subtype="FLOAT")
    with counting() as calls:
        res = run(model, corpus, out)
    assert (sum(calls), res.new, res.changed) == (5, 4, 1)  # the new files and the changed one only
    assert snapshot(out)["shard-000000.safetensors"] == legacy["shard-000000.safetensors"]
    rewritten = token_files.read(out / "shard-000002.safetensors")
    assert "sources" in rewritten.metadata and "sources" not in token_files.read(out / "shard-000001.safetensors").metadata
    assert torch.equal(rewritten.tokens["len_1763.wav"],
                       token_files.read(reference[1] / "shard-000002.safetensors").tokens["len_1763.wav"])
    assert sorted({e["shard"] for e in manifest(out)}) == [tk.shard_name(i) for i in range(5)]


def test_sigkill_mid_addition_then_resume(model, reference, tmp_path):
    """A real crash while the new files' shards are written: the resumed run writes exactly what an
    uninterrupted addition writes (the uncommitted group is planned again, into the same index)."""
    corpus, out = grown(reference, tmp_path)
    whole = tmp_path / "whole"
    shutil.copytree(reference[1], whole)
    run(model, corpus, whole)
    kill_after_lines(corpus, out, model, len(manifest(reference[1])) + 1)
    with counting() as calls:
        res = run(model, corpus, out)
    assert 0 < sum(calls) < 4 and res.shards_skipped >= 4
    assert snapshot(out) == snapshot(whole)


def kill_after_lines(corpus: Path, out: Path, model, lines: int) -> None:
    """Run the CLI on `corpus` -> `out` with a slowed encoder and SIGKILL it once the manifest has
    `lines` lines."""
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
            if (out / tk.MANIFEST).exists() and (out / tk.MANIFEST).read_text().count("\n") >= lines:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL


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
    assert not (tmp_path / "none").exists()  # refused before anything is written: no tokenize.json
    state = json.loads((out / tk.STATE).read_text())
    (out / tk.STATE).write_text(json.dumps({**state, "tf32": True}))
    with pytest.raises(InvalidInputError, match="tf32: True"):
        run(model, reference[0], out)
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
    out = tmp_path / "out"
    kill_after_lines(reference[0], out, model, 1)
    assert len(manifest(out)) < len(manifest(reference[1]))
    res, _ = resume(model, reference, out)
    assert res.shards_skipped >= 1
