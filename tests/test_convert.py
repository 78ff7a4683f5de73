"""The converter (contracts §3): accounting, determinism, exit codes, refusal of bad archives."""
import io
import json
import subprocess
import sys
import tarfile

import pytest
import torch
import yaml

from conftest import BASE_NEMO, ROOT
from nanocodec.convert.archive import read_nemo
from nanocodec.convert.converter import convert
from nanocodec import AudioCodecModel
from nanocodec.errors import CheckpointError, InvalidInputError, UnsafeCheckpointError
from parity.oracle.derive import derive_legacy_weight_norm, derive_with_discriminator, nemo_tar_bytes


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "convert", *map(str, args)], cwd=ROOT, capture_output=True, text=True)


def members(path=BASE_NEMO):
    with tarfile.open(path) as tar:
        return {m.name.lstrip("./"): tar.extractfile(m).read() for m in tar if m.isfile()}


def repack(tmp_path, name, change_config=None, change_state=None, extra=None):
    m = members()
    if change_config:
        cfg = yaml.safe_load(m["model_config.yaml"])
        change_config(cfg)
        m["model_config.yaml"] = yaml.safe_dump(cfg).encode()
    if change_state:
        state = torch.load(io.BytesIO(m["model_weights.ckpt"]), weights_only=True)
        change_state(state)
        buf = io.BytesIO()
        torch.save(state, buf)
        m["model_weights.ckpt"] = buf.getvalue()
    m.update(extra or {})
    path = tmp_path / name
    path.write_bytes(nemo_tar_bytes(m))
    return path


def test_every_tensor_is_mapped_or_dropped(base_folder):
    report = json.loads((base_folder / "conversion_report.json").read_text())
    n_tensors = len(read_nemo(BASE_NEMO).state_dict)
    assert sum(report["mapped"].values()) + sum(report["dropped"].values()) == n_tensors
    assert report["dropped"]["fsq-constants"] == 8  # 4 groups x (dim_base_index, num_levels)
    assert report["dropped"].get("loss-buffers", 0) > 0  # NeMo stores mel/stft loss buffers
    assert {p.name for p in base_folder.iterdir()} == {"config.json", "model.safetensors", "README.md", "conversion_report.json"}


def test_cli_is_deterministic_and_exit_codes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    r = run_cli(BASE_NEMO, a)
    assert r.returncode == 0, r.stderr
    assert "mapped" in r.stdout and "dropped" in r.stdout
    assert run_cli(BASE_NEMO, b).returncode == 0
    for name in ("config.json", "model.safetensors", "README.md", "conversion_report.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    before = (a / "model.safetensors").read_bytes()
    r = run_cli(BASE_NEMO, a)  # non-empty OUT without --overwrite
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "--overwrite" in r.stderr
    assert (a / "model.safetensors").read_bytes() == before
    assert run_cli(BASE_NEMO, a, "--overwrite").returncode == 0
    assert not (tmp_path / "a.old").exists()
    not_tar = tmp_path / "x.nemo"
    not_tar.write_bytes(b"hello")
    r = run_cli(not_tar, tmp_path / "c")
    assert r.returncode == 2 and "not a .nemo archive" in r.stderr and not (tmp_path / "c").exists()


def test_legacy_weight_norm_and_discriminator_variants_convert_identically(tmp_path, base_folder):
    legacy = derive_legacy_weight_norm(BASE_NEMO, tmp_path / "legacy.nemo")
    disc = derive_with_discriminator(BASE_NEMO, tmp_path / "disc.nemo")
    convert(str(legacy), str(tmp_path / "legacy"))
    rep = convert(str(disc), str(tmp_path / "disc"))
    assert rep.dropped["discriminator"] > 0
    base = (base_folder / "model.safetensors").read_bytes()
    assert (tmp_path / "legacy" / "model.safetensors").read_bytes()[-1000:] == base[-1000:]
    a = AudioCodecModel.from_pretrained(base_folder).state_dict()
    for folder in ("legacy", "disc"):
        b = AudioCodecModel.from_pretrained(tmp_path / folder).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_tensor_and_unknown_yaml_key_are_errors(tmp_path):
    bad = repack(tmp_path, "t.nemo", change_state=lambda s: s.__setitem__("audio_encoder.extra.weight", torch.zeros(3)))
    with pytest.raises(CheckpointError, match="match no mapping"):
        convert(str(bad), str(tmp_path / "o1"))
    bad = repack(tmp_path, "y.nemo", change_config=lambda c: c["audio_encoder"].__setitem__("causal", True))
    with pytest.raises(CheckpointError, match="audio_encoder.causal is not understood"):
        convert(str(bad), str(tmp_path / "o2"))
    bad = repack(tmp_path, "q.nemo", change_state=lambda s: s["vector_quantizer.fsqs.0.num_levels"].fill_(5))
    with pytest.raises(CheckpointError, match="disagrees with the config"):
        convert(str(bad), str(tmp_path / "o3"))
    shape = repack(tmp_path, "s.nemo", change_config=lambda c: c["audio_decoder"].__setitem__("base_channels", 64))
    with pytest.raises(CheckpointError, match="shape"):
        convert(str(shape), str(tmp_path / "o4"))
    assert not any(p.name.startswith("o") for p in tmp_path.iterdir())


class Payload:
    def __reduce__(self):
        return (exec, ("open('PWNED_MARKER', 'w').write('ran')",))


def test_pickle_payload_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    buf = io.BytesIO()
    torch.save({"audio_encoder.pre_conv.conv.bias": Payload()}, buf)
    bad = repack(tmp_path, "p.nemo", extra={"model_weights.ckpt": buf.getvalue()})
    with pytest.raises(UnsafeCheckpointError, match="refused, nothing was run"):
        convert(str(bad), str(tmp_path / "out"))
    assert not (tmp_path / "PWNED_MARKER").exists() and not (tmp_path / "out").exists()


def test_path_traversal_member_is_unsafe(tmp_path):
    m = members()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in [("../evil.yaml", b"x"), *m.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "trav.nemo"
    path.write_bytes(buf.getvalue())
    with pytest.raises(UnsafeCheckpointError, match=r"'\.\.'"):
        convert(str(path), str(tmp_path / "out"))
    assert not (tmp_path / "evil.yaml").exists() and not (tmp_path / "out").exists()


def test_gzip_nemo_and_model_wrapper_yaml(tmp_path):
    m = members()
    cfg = yaml.safe_load(m["model_config.yaml"])
    m["model_config.yaml"] = yaml.safe_dump({"model": cfg}).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in m.items():
            info = tarfile.TarInfo(name)  # no './' prefix this time
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path = tmp_path / "gz.nemo"
    path.write_bytes(buf.getvalue())
    convert(str(path), str(tmp_path / "out"))
    assert (tmp_path / "out" / "model.safetensors").exists()


def test_nemo_named_safetensors_folder_with_preset(tmp_path, base_folder):
    """The PyPI port's re-export layout (NeMo key names, parametrized weight norm, no architecture):
    converted with an explicit architecture (`config=`, as `--preset` gives a released, full-size one:
    here the reduced-width fixture's), it must give exactly what the .nemo gives."""
    from nanocodec.config import NanoCodecConfig
    from nanocodec.fileio import tensorfile

    fixture_config = NanoCodecConfig.from_json((base_folder / "config.json").read_text())
    state = read_nemo(BASE_NEMO).state_dict
    keep = {k: v for k, v in state.items() if k.startswith(("audio_encoder.", "audio_decoder."))}
    (tmp_path / "port").mkdir()
    (tmp_path / "port" / "model.safetensors").write_bytes(tensorfile.to_bytes(keep))
    # no preset named: identified from the shapes among the presets, which are full size: none fits
    with pytest.raises(CheckpointError, match="fit none of the presets.*--preset"):
        convert(str(tmp_path / "port"), str(tmp_path / "no-preset"))
    with pytest.raises(InvalidInputError, match="own model_config.yaml.*pass no preset"):
        convert(str(BASE_NEMO), str(tmp_path / "nemo-with-preset"), preset="nanocodec-22khz-0.6kbps-12.5fps")
    # a released preset is the full-size architecture: the reduced-width tensors do not fit it
    with pytest.raises(CheckpointError, match="shape"):
        convert(str(tmp_path / "port"), str(tmp_path / "full"), preset="nanocodec-22khz-0.6kbps-12.5fps")
    report = convert(str(tmp_path / "port"), str(tmp_path / "out"), config=fixture_config)
    assert report.source_kind == "NeMo-named safetensors"
    assert any("architecture from the config passed in" in n for n in report.config_notes)
    assert (tmp_path / "out" / "model.safetensors").read_bytes()[-4096:] == (base_folder / "model.safetensors").read_bytes()[-4096:]
    a = AudioCodecModel.from_pretrained(base_folder).state_dict()
    b = AudioCodecModel.from_pretrained(tmp_path / "out").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
