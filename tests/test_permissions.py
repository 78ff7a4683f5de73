"""Outputs get the permissions a plain open()/mkdir() gives under the user's umask (contracts §6), not
tempfile's 0600/0700, and a replaced output gets fresh ones: every artifact kind (token files, tokenize
shards, manifests and state, WAVs, model folders from save_pretrained and the converter), under umask
022 and 077. The umask is process-wide, so each runs in a subprocess that sets it first (~10 s each:
torch import, one conversion, one tiny tokenize run)."""
import json
import stat
import subprocess
import sys

import pytest

from conftest import BASE_NEMO, ROOT

SCRIPT = r"""
import json, os, shutil, stat, sys
from pathlib import Path

umask, work, base, nemo, speech = int(sys.argv[1], 8), Path(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
os.umask(umask)  # this process only: the test's own umask is untouched
import numpy as np
import soundfile as sf
import torch
torch.set_num_threads(1)
from nanocodec import AudioCodecModel
from nanocodec.apps import corpus as tk
from nanocodec.convert.converter import convert
from nanocodec.fileio import audio, token_files

def stale(path, folder=False):
    # an earlier output with other permissions: the replacement must not inherit them
    if folder:
        path.mkdir()
        (path / "old.txt").write_text("old")
        path.chmod(0o750)
    else:
        path.write_bytes(b"old")
        path.chmod(0o640)

model = AudioCodecModel.from_pretrained(base)
tokens, _ = model.encode(torch.zeros(2000))
stale(work / "tokens.safetensors")
token_files.write(work / "tokens.safetensors", {"tokens": tokens[0]}, {"tokens": 2000},
                  token_files.header(model, base))
stale(work / "speech.wav")
audio.write(work / "speech.wav", np.zeros(100, np.float32), 22050)
stale(work / "saved", folder=True)
model.save_pretrained(work / "saved", overwrite=True)
convert(nemo, str(work / "converted"))

corpus = work / "corpus"
corpus.mkdir()
shutil.copy(speech, corpus / "a.wav")
(corpus / "bad.wav").write_bytes(b"RIFF....WAVEjunk" * 8)  # so that errors.jsonl exists
kw = dict(model_ref=base, shard_size=2, batch_size=2, progress=False, log=lambda m: None)
tk.tokenize(corpus, work / "tok", model, **kw)
sf.write(corpus / "a.wav", np.zeros(3000, np.float32), 22050, subtype="PCM_16")
tk.tokenize(corpus, work / "tok", model, **kw)  # a changed file: shard and logs rewritten

modes = {}
for path in sorted(work.rglob("*")):
    if corpus in path.parents or path == corpus or path.name == tk.LOCK:
        continue
    modes[str(path.relative_to(work))] = [path.is_dir(), stat.S_IMODE(path.stat().st_mode)]
print(json.dumps(modes))
"""


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_follow_the_umask(umask, base_folder, tmp_path):
    speech = ROOT / "tests" / "fixtures" / "audio" / "len_1764.wav"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, oct(umask), str(tmp_path), str(base_folder), str(BASE_NEMO),
                           str(speech)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    modes = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {True: 0o777 & ~umask, False: 0o666 & ~umask}
    wrong = {p: oct(m) for p, (is_dir, m) in modes.items() if m != expected[is_dir]}
    assert not wrong, f"under umask {umask:03o}: {wrong}"
    # every artifact kind was checked
    for must in ("tokens.safetensors", "speech.wav", "saved", "saved/model.safetensors", "saved/config.json",
                 "converted", "converted/model.safetensors", "tok", "tok/shard-000000.safetensors",
                 "tok/manifest.jsonl", "tok/errors.jsonl", "tok/tokenize.json"):
        assert must in modes, must
    assert "saved/old.txt" not in modes  # replaced, not merged
    assert stat.S_IMODE(0o640) != expected[False]  # the stale modes differ from what is expected
