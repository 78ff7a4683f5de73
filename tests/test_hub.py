"""`from_pretrained` of what exists in the world (contracts §1): a `.nemo`, NVIDIA's hub repos holding one,
the PyPI port's NeMo-named safetensors (its variant identified from the tensor shapes), nanocodec's own
layout; the converted-model cache. No network: the hub functions are local fakes, or huggingface_hub
itself reads a real cache-folder layout offline (HF_HUB_OFFLINE=1, in a child process).

Tokens are compared with NeMo's recorded references under contracts §5 (parity/compare.py), never with
our own output. Cost: ~40 s on the 2-core box (a dozen loads of the 0.6 MB fixture model, two child
processes that import torch).
"""
import dataclasses
import fnmatch
import json
import logging
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

import nanocodec.convert.converter as converter_module
from conftest import BASE_NEMO, FIXTURES
from nanocodec import AudioCodecModel, NanoCodecConfig
from nanocodec.convert import __version__ as converter_version
from nanocodec.convert.archive import read_nemo
from nanocodec.convert.cache import cache_root
from nanocodec.convert.identify import folded_shapes, identify, model_shapes
from nanocodec.convert.keymap import drop_rule, target_name, weight_norm_part
from nanocodec.errors import CheckpointError, InvalidInputError
from nanocodec.presets import PRESETS
from parity.compare import compare_tokens
from parity.fixtures import write_reexport

OFFICIAL = "nanocodec-22khz-0.6kbps-12.5fps"
REFS = FIXTURES / "refs" / "nano0p6_replicate"
SPEECH = "speech_0p5s"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test converts into its own cache root, never the user's."""
    monkeypatch.setenv("NANOCODEC_CACHE", str(tmp_path / "nanocodec-cache"))
    return tmp_path / "nanocodec-cache"


@pytest.fixture(scope="module")
def fixture_config(base_folder):
    return NanoCodecConfig.from_json((base_folder / "config.json").read_text())


@pytest.fixture
def seed_folder(tmp_path):
    """The seed's re-export layout (nineninesix/...-pytorch): NeMo-named safetensors and the PyPI port's
    own config.json, here of the reduced-width fixture model."""
    folder = write_reexport(BASE_NEMO, tmp_path / "seed")
    (folder / "config.json").write_text(json.dumps({"sample_rate": 22050}))
    return folder


@pytest.fixture
def fixture_preset(monkeypatch, fixture_config):
    """A preset with the fixture model's (reduced-width) architecture, so that shape identification can
    pick it as it picks the full-size 0.6 kbps preset for the real re-export."""
    preset = dataclasses.replace(PRESETS[OFFICIAL], name="fixture-nano0p6", encoder={"base_channels": 2},
                                 decoder={"base_channels": 96})
    assert preset.config().to_json() == fixture_config.to_json()
    monkeypatch.setitem(PRESETS, preset.name, preset)
    return preset


def assert_tokens_match_nemo(model, name=SPEECH):
    """contracts §5 against NeMo's recording: identical tokens, flips only at FSQ rounding boundaries."""
    audio, _ = __import__("soundfile").read(FIXTURES / "audio" / f"{name}.wav", dtype="float32")
    ref = load_file(str(REFS / f"{name}.safetensors"))
    tokens, tokens_len = model.encode(torch.from_numpy(audio)[None])
    report = compare_tokens(tokens.numpy(), ref["tokens"], ref["prerounding"], tokens_len.numpy())
    assert report.ok, report.to_dict()
    assert np.array_equal(tokens_len.numpy(), ref["tokens_len"])


def cached_entries(root):
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# ---- shape identification ---------------------------------------------------------------------
def nemo_meta_shapes(preset, fixture_nemo_keys):
    """NeMo-named shapes of `preset`'s full-size model: the key names NeMo gives a model of that
    topology (a committed fixture's) with the shapes of the preset's model, built on the meta device."""
    ours = model_shapes(preset.config())
    shapes = {}
    for key in fixture_nemo_keys:
        mapped = target_name(key)
        if mapped is None:
            assert drop_rule(key), key
            continue
        part = weight_norm_part(mapped[0])
        if part is None:
            shapes[key] = ours[mapped[0]]
        else:
            weight = ours[part[0] + ".weight"]
            shapes[key] = weight if part[1] == "v" else (weight[0], 1, 1)
    return shapes


@pytest.fixture(scope="module")
def fixture_key_sets():
    out = {}
    for path in sorted((FIXTURES / "models").glob("*.nemo")):
        keys = list(read_nemo(path).state_dict)
        out[path.stem] = keys
    return out


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_identified_from_its_shapes(name, fixture_key_sets):
    preset = PRESETS[name]
    expected = set(model_shapes(preset.config()))
    topology = [keys for keys in fixture_key_sets.values() if set(folded_shapes({k: (1,) for k in keys})[0]) == expected]
    assert topology, f"no committed fixture has {name}'s topology"
    shapes = nemo_meta_shapes(preset, topology[0])
    assert identify(shapes) is preset
    assert identify(shapes, sample_rate=preset.sample_rate) is preset
    with pytest.raises(CheckpointError, match=f"shapes are those of {name}.*sample_rate 16000"):
        identify(shapes, sample_rate=16000)


def test_identification_refuses_ambiguity_and_strangers(fixture_key_sets):
    official = PRESETS[OFFICIAL]
    twin = dataclasses.replace(official, name="twin-reflect", encoder={"pad_mode": "reflect"})
    shapes = nemo_meta_shapes(official, fixture_key_sets["nano0p6_replicate"])
    with pytest.raises(CheckpointError, match=f"fit several presets: {OFFICIAL}, twin-reflect.*preset="):
        identify(shapes, presets={OFFICIAL: official, "twin-reflect": twin})
    reduced = {k: v.shape for k, v in read_nemo(BASE_NEMO).state_dict.items()}
    with pytest.raises(CheckpointError, match=f"fit none of the presets \\(closest: {OFFICIAL}.*NanoCodecConfig"):
        identify(reduced)
    with pytest.raises(CheckpointError, match="match no NeMo codec name"):
        identify({**shapes, "audio_encoder.mystery.weight": (3,)})


# ---- local sources ------------------------------------------------------------------------------
def test_nemo_file_loads_converted_and_cached_once(tmp_path, private_cache, caplog):
    caplog.set_level(logging.INFO, logger="nanocodec")
    model = AudioCodecModel.from_pretrained(BASE_NEMO, backend="reference")
    assert_tokens_match_nemo(model)
    entries = cached_entries(private_cache)
    digest = read_sha256(BASE_NEMO)
    assert entries == [f"{digest}-nemo-converter{converter_version}"]
    lines = [r.getMessage() for r in caplog.records if "converted" in r.getMessage()]
    assert len(lines) == 1 and str(BASE_NEMO) in lines[0] and str(private_cache / entries[0]) in lines[0]
    report = json.loads((private_cache / entries[0] / "conversion_report.json").read_text())
    assert report["source_sha256"] == digest and report["source_kind"] == ".nemo"
    # a second load (the .nemo copied elsewhere: same bytes) is the cached folder, no conversion
    shutil.copy(BASE_NEMO, tmp_path / "copy.nemo")
    caplog.clear()
    AudioCodecModel.from_pretrained(tmp_path / "copy.nemo", backend="reference")
    assert not [r for r in caplog.records if "converted" in r.getMessage()]
    assert cached_entries(private_cache) == entries
    # a folder holding one .nemo (NVIDIA's repo layout) is the same source
    (tmp_path / "nvidia").mkdir()
    shutil.copy(BASE_NEMO, tmp_path / "nvidia" / "nemo-nano-codec-22khz-0.6kbps-12.5fps.nemo")
    assert AudioCodecModel.from_pretrained(tmp_path / "nvidia", backend="reference").config.encoder.pad_mode == "replicate"
    assert cached_entries(private_cache) == entries


def read_sha256(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_seed_layout_folder(seed_folder, fixture_config, fixture_preset, private_cache, caplog):
    caplog.set_level(logging.INFO, logger="nanocodec")
    # identified from its shapes among the presets (here with the fixture's architecture added)
    model = AudioCodecModel.from_pretrained(seed_folder, backend="reference")
    assert_tokens_match_nemo(model)
    line = next(r.getMessage() for r in caplog.records if "converted" in r.getMessage())
    assert "preset fixture-nano0p6 (identified from its tensor shapes)" in line
    assert "pad_mode replicate are INFERRED" in line  # the 0.6 kbps preset's assumption, said in the log
    # named: by preset name, or by any NanoCodecConfig; each architecture is its own cache entry
    AudioCodecModel.from_pretrained(seed_folder, preset="fixture-nano0p6", backend="reference")
    assert len(cached_entries(private_cache)) == 1
    again = AudioCodecModel.from_pretrained(seed_folder, preset=fixture_config, backend="reference")
    assert len(cached_entries(private_cache)) == 1  # the same config: the same entry
    assert again.config.to_json() == fixture_config.to_json()
    reflect = dataclasses.replace(fixture_config, encoder=dataclasses.replace(fixture_config.encoder, pad_mode="reflect"))
    AudioCodecModel.from_pretrained(seed_folder, preset=reflect, backend="reference")
    assert len(cached_entries(private_cache)) == 2
    # one safetensors file of that folder is the same source
    AudioCodecModel.from_pretrained(seed_folder / "model.safetensors", backend="reference")
    with pytest.raises(CheckpointError, match="unknown preset 'nope'; choose one of"):
        AudioCodecModel.from_pretrained(seed_folder, preset="nope")


def test_seed_layout_of_no_preset_lists_them(seed_folder):
    with pytest.raises(CheckpointError, match=f"fit none of the presets.*{OFFICIAL}.*preset="):
        AudioCodecModel.from_pretrained(seed_folder)
    (seed_folder / "config.json").unlink()  # the re-export without any config.json: the same question
    with pytest.raises(CheckpointError, match="fit none of the presets"):
        AudioCodecModel.from_pretrained(seed_folder)


def test_what_is_not_a_model_is_said(tmp_path, base_folder, seed_folder):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError, match=r"holds no config.json, no .safetensors and no .nemo \(found: notes.txt\)"):
        AudioCodecModel.from_pretrained(empty)
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.nemo", "b.nemo"):
        shutil.copy(BASE_NEMO, two / name)
    with pytest.raises(CheckpointError, match=r"several .nemo files \(a.nemo, b.nemo\)"):
        AudioCodecModel.from_pretrained(two)
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "dac"}))
    shutil.copy(base_folder / "model.safetensors", other / "model.safetensors")
    with pytest.raises(CheckpointError, match="model_type is 'dac'.*other names"):
        AudioCodecModel.from_pretrained(other)
    with pytest.raises(CheckpointError, match="neither an existing file or folder nor a hub repo id"):
        AudioCodecModel.from_pretrained(tmp_path / "missing" / "deeper")
    with pytest.raises(InvalidInputError, match="own model_config.yaml"):
        AudioCodecModel.from_pretrained(BASE_NEMO, preset=OFFICIAL)
    with pytest.raises(InvalidInputError, match="pass no preset"):
        AudioCodecModel.from_pretrained(base_folder, preset=OFFICIAL)


def test_concurrent_loads_convert_once_each_and_agree(monkeypatch, private_cache):
    """Two loads converting the same source at the same moment: both succeed on one cache entry."""
    barrier = threading.Barrier(2, timeout=60)
    real = converter_module.convert_source

    def racing(*args, **kwargs):
        barrier.wait()  # both have missed the cache and converted before either renames
        return real(*args, **kwargs)

    monkeypatch.setattr(converter_module, "convert_source", racing)
    models, errors = [], []

    def load():
        try:
            models.append(AudioCodecModel.from_pretrained(BASE_NEMO, backend="reference"))
        except Exception as e:  # noqa: BLE001  reported below
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(models) == 2
    assert len(cached_entries(private_cache)) == 1  # the winner's; the loser's staging folder is gone
    a, b = (m.state_dict() for m in models)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cache_root_rules(tmp_path, monkeypatch):
    monkeypatch.delenv("NANOCODEC_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert cache_root() == tmp_path / "hf" / "nanocodec" / "converted"
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "huggingface" / "nanocodec" / "converted"
    monkeypatch.setenv("NANOCODEC_CACHE", str(tmp_path / "nc"))
    assert cache_root() == tmp_path / "nc"
    assert cache_root(tmp_path / "given") == tmp_path / "given" / "nanocodec" / "converted"


# ---- hub repos, with the hub functions replaced by local fakes ---------------------------------
class FakeHub:
    """huggingface_hub's snapshot_download / hf_hub_download over local folders: repo id -> files."""

    def __init__(self, tmp_path, repos):
        self.root, self.repos, self.calls = tmp_path / "fake-hub", repos, []

    def snapshot_download(self, repo_id, *, revision=None, allow_patterns=None, **kwargs):
        self.calls.append(("snapshot", repo_id, revision, tuple(allow_patterns or ()), kwargs))
        if repo_id not in self.repos:
            raise RuntimeError(f"404 {repo_id}")
        out = self.root / repo_id / str(revision)
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        for src in self.repos[repo_id]:
            if not allow_patterns or any(fnmatch.fnmatch(src.name, p) for p in allow_patterns):
                shutil.copy(src, out / src.name)
        return str(out)

    def hf_hub_download(self, repo_id, filename, *, revision=None, **kwargs):
        self.calls.append(("file", repo_id, revision, filename, kwargs))
        for src in self.repos.get(repo_id, []):
            if src.name == filename:
                return str(src)
        raise RuntimeError(f"404 {repo_id}/{filename}")


@pytest.fixture
def hub(tmp_path, monkeypatch, base_folder, seed_folder):
    import huggingface_hub

    nvidia = tmp_path / "nvidia-layout"
    nvidia.mkdir()
    shutil.copy(BASE_NEMO, nvidia / "tiny-codec.nemo")
    (nvidia / "README.md").write_text("model card")
    official_file = nvidia / PRESETS[OFFICIAL].nemo_filename  # NVIDIA's file name: <repo name>.nemo
    shutil.copy(BASE_NEMO, official_file)
    fake = FakeHub(tmp_path, {
        PRESETS[OFFICIAL].hub_id: [official_file],
        "someone/tiny-codec": [nvidia / "tiny-codec.nemo", nvidia / "README.md"],
        "nineninesix/tiny-codec-pytorch": sorted(seed_folder.iterdir()),
        "us/tiny-codec-nanocodec": sorted(p for p in base_folder.iterdir()),
        "someone/empty": [nvidia / "README.md"],
    })
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake.hf_hub_download)
    return fake


def test_hub_repos_through_fakes(hub, fixture_config, private_cache, tmp_path):
    official = PRESETS[OFFICIAL]
    # NVIDIA's repo: its pinned revision by default, the .nemo's sha256 checked (the fixture is not it)
    with pytest.raises(CheckpointError, match="is not the pinned"):
        AudioCodecModel.from_pretrained(official.hub_id)
    assert hub.calls[-1][:4] == ("file", official.hub_id, official.revision, official.nemo_filename)
    assert not cached_entries(private_cache)
    # another revision is the user's choice: no pin to check, converted
    model = AudioCodecModel.from_pretrained(official.hub_id, revision="main", backend="reference")
    assert_tokens_match_nemo(model)
    # a repo in NVIDIA's layout under another name: the small files first, then its one .nemo
    hub.calls.clear()
    model = AudioCodecModel.from_pretrained("someone/tiny-codec", backend="reference", token="t0k")
    assert [c[3] for c in hub.calls] == [("config.json", "*.safetensors"), ("*.nemo",)]
    assert all(c[4] == {"token": "t0k"} for c in hub.calls)
    assert len(cached_entries(private_cache)) == 1  # the same bytes as the official file: one entry
    # the seed's re-export repo: NeMo-named safetensors and the port's config.json; no .nemo asked for
    hub.calls.clear()
    model = AudioCodecModel.from_pretrained("nineninesix/tiny-codec-pytorch", preset=fixture_config, backend="reference")
    assert_tokens_match_nemo(model)
    assert [c[3] for c in hub.calls] == [("config.json", "*.safetensors")]
    # our own layout on the hub: loaded as it is, nothing converted
    before = cached_entries(private_cache)
    AudioCodecModel.from_pretrained("us/tiny-codec-nanocodec", revision="v1", backend="reference")
    assert cached_entries(private_cache) == before and hub.calls[-1][2] == "v1"
    with pytest.raises(CheckpointError, match="holds no config.json, .safetensors or .nemo"):
        AudioCodecModel.from_pretrained("someone/empty")
    with pytest.raises(CheckpointError, match="could not download 'someone/missing'"):
        AudioCodecModel.from_pretrained("someone/missing")
    # cache_dir=: huggingface_hub's download cache, and the converted models beneath it
    hub.calls.clear()
    AudioCodecModel.from_pretrained("someone/tiny-codec", cache_dir=tmp_path / "mine", backend="reference")
    assert all(c[4] == {"cache_dir": tmp_path / "mine"} for c in hub.calls)
    assert len(cached_entries(tmp_path / "mine" / "nanocodec" / "converted")) == 1


def test_nemo_compat_and_converter_take_the_same_sources(hub, tmp_path, fixture_preset):
    from nanocodec.convert.converter import convert
    from nanocodec.nemo_compat import AudioCodecModel as NemoCompat

    codec = NemoCompat.from_pretrained("someone/tiny-codec", backend="reference")
    assert codec.model.config.encoder.pad_mode == "replicate"
    report = convert("nineninesix/tiny-codec-pytorch", str(tmp_path / "out"))  # identified, as from_pretrained does
    assert report.source_kind == "NeMo-named safetensors"
    assert any("preset fixture-nano0p6 (identified from its tensor shapes)" in n for n in report.config_notes)
    assert any("sample_rate only: 22050" in n for n in report.config_notes)


# ---- a real huggingface_hub cache folder, offline --------------------------------------------------
def hf_cache_repo(hub_cache, repo_id, files, revision="0123456789abcdef0123456789abcdef01234567"):
    """What huggingface_hub leaves after a download: blobs named by content, snapshot symlinks, refs/main."""
    import hashlib

    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True)
    for name, src in files.items():
        data = src.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / name).symlink_to(os.path.relpath(blob, snap))


CHILD = """
import sys, numpy as np, soundfile as sf, torch
from nanocodec import AudioCodecModel, NanoCodecConfig
config = NanoCodecConfig.from_json(open(sys.argv[2]).read())
audio, _ = sf.read(sys.argv[3], dtype="float32")
for i, (repo, preset) in enumerate([("someone/tiny-codec", None), ("nineninesix/tiny-codec-pytorch", config)]):
    model = AudioCodecModel.from_pretrained(repo, preset=preset, backend="reference")
    tokens, tokens_len = model.encode(torch.from_numpy(audio)[None])
    np.save(f"{sys.argv[1]}/tokens{i}.npy", tokens.numpy())
"""


def test_real_hf_cache_layout_offline(tmp_path, base_folder, seed_folder):
    hf_home = tmp_path / "hf"
    hf_cache_repo(hf_home / "hub", "someone/tiny-codec", {"tiny-codec.nemo": BASE_NEMO})
    hf_cache_repo(hf_home / "hub", "nineninesix/tiny-codec-pytorch",
                  {p.name: p for p in seed_folder.iterdir()})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "NANOCODEC_"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(base_folder / "config.json"),
                        str(FIXTURES / "audio" / f"{SPEECH}.wav")], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    # no logging set up in the child: the conversion's one line went to stderr, naming the cache
    converted = hf_home / "nanocodec" / "converted"
    assert r.stderr.count("nanocodec: converted") == 2 and str(converted) in r.stderr, r.stderr
    assert len(cached_entries(converted)) == 2
    ref = load_file(str(REFS / f"{SPEECH}.safetensors"))
    for i in range(2):
        report = compare_tokens(np.load(tmp_path / f"tokens{i}.npy"), ref["tokens"], ref["prerounding"], ref["tokens_len"])
        assert report.ok, report.to_dict()
