"""Hostile checkpoints (issue 9, contracts §4, §6): every case is generated here, in tmp_path, from
the base fixture `nano0p6_replicate.nemo`, and fed to the converter.

Each hostile case must raise exactly the documented error type with a message naming the problem,
write nothing to the output folder (no temp leftovers beside it either), write nothing anywhere
else (the whole tmp tree is compared before and after; relative traversal targets land inside it),
and never run a payload (its marker file never appears). Decompression bombs are real (a 16 GiB
zero stream built from repeated gzip members, a few MB on disk) and must be refused from the
member headers: the inflated bytes are counted. Legitimate variants still convert to the same
weights, a small generator saved with NeMo's full-size discriminators included (issue 16). `test_convert.py` holds the converter's basic refusals; this suite extends them.
"""
from __future__ import annotations

import functools
import gzip
import io
import math
import pickle
import posix
import subprocess
import sys
import tarfile
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import load_file

from conftest import BASE_NEMO, ROOT
from nanocodec.convert import archive
from nanocodec.convert.converter import convert
from nanocodec.errors import CheckpointError, UnsafeCheckpointError
from parity.oracle import derive

CONFIG, WEIGHTS = derive.CONFIG_NAME, derive.WEIGHTS_NAME
MARKER = "PWNED_MARKER"  # a payload that ran would create this file in the case's tmp_path
GiB = 1 << 30
FULL_DISCRIMINATOR_SPEC = derive.HERE / "full_discriminator_spec.json"  # parity/oracle/record_full_discriminator.py


# ---------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------
@functools.cache
def base_members() -> dict[str, bytes]:
    return derive.read_nemo(BASE_NEMO)


@functools.cache
def base_state() -> "OrderedDict[str, torch.Tensor]":
    return derive.load_weights(base_members()[WEIGHTS])


def weights_with(change: Callable[[OrderedDict], object]) -> bytes:
    """The base weights after `change` (which must assign new tensors, never edit them in place)."""
    state = OrderedDict(base_state())
    change(state)
    return derive.save_weights(state)


def set_value(key: str, index, value) -> Callable[[OrderedDict], None]:
    def change(state):
        t = state[key].clone()
        t.view(-1)[index] = value
        state[key] = t
    return change


def entry(name: str, data: bytes = b"", *, type=tarfile.REGTYPE, linkname: str = "", pax: dict | None = None,
          size: int | None = None) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = type
    info.linkname = linkname
    info.mode = 0o755 if type == tarfile.DIRTYPE else 0o644
    info.size = len(data) if size is None else size
    if pax:
        info.pax_headers = pax
    return info, data


def tar_of(entries, *, fmt=tarfile.PAX_FORMAT, gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def nemo_entries(members: dict[str, bytes] | None = None, prefix: str = "./") -> list:
    members = base_members() if members is None else members
    return [entry(".", type=tarfile.DIRTYPE)] + [entry(prefix + n, d) for n, d in sorted(members.items())]


def nemo_with(**replace: bytes | None) -> bytes:
    """The base archive (NeMo's layout) with members replaced (or removed, with None)."""
    members = dict(base_members())
    for key, data in replace.items():
        name = {"config": CONFIG, "weights": WEIGHTS}.get(key, key)
        if data is None:
            members.pop(name)
        else:
            members[name] = data
    return derive.nemo_tar_bytes(members)


def yaml_text() -> str:
    return base_members()[CONFIG].decode()


def config_with(change: Callable[[dict], object]) -> bytes:
    cfg = derive.load_config(base_members()[CONFIG])
    change(cfg)
    return derive.dump_config(cfg)


@functools.cache
def zeros_gz_member() -> bytes:
    """One gzip member inflating to 64 MiB of zeros (about 64 KB)."""
    return gzip.compress(bytes(64 << 20), compresslevel=9, mtime=0)


def gzip_bomb(head_entries, bomb: tarfile.TarInfo, inflated: int) -> bytes:
    """A gzip `.nemo` whose tar stream is `head_entries`, then `bomb`'s header, then `inflated`
    bytes of zeros made of repeated gzip members (concatenated members are one valid gzip stream)."""
    head = io.BytesIO()
    with tarfile.open(fileobj=head, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in head_entries:
            tar.addfile(info, io.BytesIO(data))
    prefix = _without_end(head.getvalue()) + bomb.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    return gzip.compress(prefix, mtime=0) + zeros_gz_member() * (inflated // (64 << 20))


def _without_end(tar_bytes: bytes) -> bytes:
    """Strip the end-of-archive zero blocks (and record padding) a finished tar carries."""
    end = len(tar_bytes)
    while end >= 512 and tar_bytes[end - 512:end] == bytes(512):
        end -= 512
    return tar_bytes[:end]


def head_members() -> list:
    return [entry("./" + CONFIG, base_members()[CONFIG])]


def _header_only(info: tarfile.TarInfo) -> bytes:
    """A plain tar: the yaml, then `info`'s header declaring far more data than follows it."""
    return _without_end(tar_of(head_members(), fmt=tarfile.GNU_FORMAT)) + info.tobuf(
        tarfile.GNU_FORMAT, "utf-8", "surrogateescape") + bytes(64 << 10)


def torch_zip_deflated() -> bytes:
    src = zipfile.ZipFile(io.BytesIO(base_members()[WEIGHTS]))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    return out.getvalue()


def legacy_weights(state) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


class ExecPayload:
    """Unpickling this would run code that writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


class SystemPayload(ExecPayload):
    def __reduce__(self):
        return (posix.system, (f"touch {self.marker}",))


# ---------------------------------------------------------------------------------------------
# the cases
# ---------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    build: Callable[[Path], bytes]  # tmp_path -> the file's bytes (tmp_path: for payload markers)
    error: type
    match: str
    patch: dict = field(default_factory=dict)  # convert.archive constants to lower for this case
    max_inflated: int | None = None  # gzip cases: most bytes the reader may inflate


def _payload_state(marker, payload_cls, key="audio_encoder.pre_conv.conv.bias"):
    state = OrderedDict(base_state())
    state[key] = payload_cls(marker)
    return state


def _zip_weights(state) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _alias_bomb() -> bytes:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    return (yaml_text() + "\n" + "\n".join(lines) + "\n").encode()


def _extra_members(n) -> dict:
    return {f"extra_{i:02d}.txt": b"x" for i in range(n)}


CASES = [
    # -- code execution: the payload must never run ------------------------------------------
    Case("pickle-exec-zip", lambda t: nemo_with(weights=_zip_weights(_payload_state(t / MARKER, ExecPayload))),
         UnsafeCheckpointError, r"refused, nothing was run\): Unsupported global: GLOBAL (builtins\.)?exec"),
    Case("pickle-system-legacy-format", lambda t: nemo_with(weights=legacy_weights(_payload_state(t / MARKER, SystemPayload))),
         UnsafeCheckpointError, "refused, nothing was run"),
    Case("pickle-payload-in-dropped-tensor",
         lambda t: nemo_with(weights=_zip_weights(_payload_state(t / MARKER, ExecPayload, "discriminator.x.weight"))),
         UnsafeCheckpointError, "refused, nothing was run"),
    Case("pickle-bare-exec", lambda t: nemo_with(weights=pickle.dumps(ExecPayload(t / MARKER))),
         UnsafeCheckpointError, r"refused, nothing was run\): Unsupported operand"),
    Case("yaml-python-object-apply",
         lambda t: nemo_with(config=(yaml_text() + f"evil: !!python/object/apply:posix.system ['touch {t / MARKER}']\n").encode()),
         UnsafeCheckpointError, "python/object/apply"),
    Case("yaml-python-name", lambda t: nemo_with(config=(yaml_text() + "evil: !!python/name:os.system\n").encode()),
         UnsafeCheckpointError, "python/name"),
    # -- member names that point outside ------------------------------------------------------
    Case("member-dotdot", lambda t: tar_of(nemo_entries() + [entry("./../../escaped.txt", b"x")]),
         UnsafeCheckpointError, r"outside the archive \('\.\.'\)"),
    Case("member-absolute", lambda t: tar_of([entry("/" + str(t / "abs_escaped.txt").lstrip("/"), b"x")] + nemo_entries()),
         UnsafeCheckpointError, "absolute path"),
    Case("pax-path-dotdot", lambda t: tar_of(nemo_entries() + [entry("harmless.txt", b"x", pax={"path": "../../escaped.txt"})]),
         UnsafeCheckpointError, r"'\.\.'"),
    Case("directory-dotdot", lambda t: tar_of([entry("../up", type=tarfile.DIRTYPE)] + nemo_entries()),
         UnsafeCheckpointError, r"'\.\.'"),
    # -- links and special files --------------------------------------------------------------
    Case("symlink-as-weights",
         lambda t: tar_of(nemo_entries({CONFIG: base_members()[CONFIG]}) + [entry("./" + WEIGHTS, type=tarfile.SYMTYPE, linkname="/etc/passwd")]),
         UnsafeCheckpointError, "is a link"),
    Case("symlink-extra-member", lambda t: tar_of(nemo_entries() + [entry("./escape", type=tarfile.SYMTYPE, linkname="../..")]),
         UnsafeCheckpointError, "is a link"),
    Case("hardlink", lambda t: tar_of(nemo_entries() + [entry("./copy.ckpt", type=tarfile.LNKTYPE, linkname="./" + WEIGHTS)]),
         UnsafeCheckpointError, "is a link"),
    Case("char-device", lambda t: tar_of(nemo_entries() + [entry("./null", type=tarfile.CHRTYPE)]),
         UnsafeCheckpointError, "device"),
    Case("block-device", lambda t: tar_of(nemo_entries() + [entry("./sda", type=tarfile.BLKTYPE)]),
         UnsafeCheckpointError, "device"),
    Case("fifo", lambda t: tar_of(nemo_entries() + [entry("./pipe", type=tarfile.FIFOTYPE)]),
         UnsafeCheckpointError, "fifo"),
    # -- an archive where the yaml or the weights should be ------------------------------------
    Case("weights-is-a-nemo", lambda t: nemo_with(weights=BASE_NEMO.read_bytes()), CheckpointError,
         f"{WEIGHTS} is itself a tar archive"),
    Case("weights-is-gzip", lambda t: nemo_with(weights=gzip.compress(base_members()[WEIGHTS], mtime=0)), CheckpointError,
         f"{WEIGHTS} is itself a gzip archive"),
    Case("yaml-is-a-tar", lambda t: nemo_with(config=tar_of([entry(CONFIG, base_members()[CONFIG])])), CheckpointError,
         f"{CONFIG} is itself a tar archive"),
    Case("yaml-is-a-zip", lambda t: nemo_with(config=_zip_of({CONFIG: base_members()[CONFIG]})), CheckpointError,
         f"{CONFIG} is itself a zip archive"),
    # -- limits and decompression bombs -------------------------------------------------------
    Case("gzip-bomb-weights-16GiB", lambda t: gzip_bomb(head_members(), entry("./" + WEIGHTS, size=16 * GiB)[0], 16 * GiB),
         CheckpointError, f"{WEIGHTS} is {16 * GiB} bytes, over the", max_inflated=1 << 20),
    Case("gzip-bomb-weights-256MiB-past-8x-on-disk",
         lambda t: gzip_bomb(head_members(), entry("./" + WEIGHTS, size=256 << 20)[0], 256 << 20),
         CheckpointError, rf"{WEIGHTS}' declares 268435456 bytes, .* past its \d+-byte limit \(8x the \d+ bytes the file "
         r"takes on disk, plus 1 MiB.*\); the file is truncated, not a \.nemo checkpoint, or a decompression bomb",
         max_inflated=1 << 20),
    Case("plain-tar-weights-header-past-8x-on-disk", lambda t: _header_only(entry("./" + WEIGHTS, size=256 << 20)[0]),
         CheckpointError, r"declares 268435456 bytes, .* past its \d+-byte limit \(8x the \d+ bytes the file takes on disk"),
    Case("gzip-bomb-unknown-member-16GiB", lambda t: gzip_bomb([], entry("./aaa_extra.bin", size=16 * GiB)[0], 16 * GiB),
         CheckpointError, r"'\./aaa_extra\.bin' declares 17179869184 bytes, .* past its \d+-byte limit \(8x the",
         max_inflated=1 << 20),
    Case("gzip-bomb-pax-header-1GiB", lambda t: gzip_bomb([], entry("././@PaxHeader", type=tarfile.XHDTYPE, size=GiB)[0], GiB),
         CheckpointError, "extended .* header of 1073741824 bytes", max_inflated=1 << 20),
    Case("weights-over-patched-limit-gzip",
         lambda t: tar_of(nemo_entries(), gz=True),
         CheckpointError, f"{WEIGHTS} is \\d+ bytes, over the 1048576-byte limit",
         patch={"MAX_WEIGHTS_BYTES": 1 << 20}, max_inflated=2 << 20),
    Case("weights-zip-with-deflated-records", lambda t: nemo_with(weights=torch_zip_deflated()), CheckpointError,
         "is compressed; torch.save never writes"),
    Case("yaml-over-1MiB", lambda t: nemo_with(config=(yaml_text() + "#" * (1 << 20) + "\n").encode()), CheckpointError,
         f"{CONFIG} is \\d+ bytes, over the 1048576-byte limit"),
    Case("too-many-members", lambda t: tar_of(nemo_entries({**base_members(), **_extra_members(14)})), CheckpointError,
         "more than 16 members"),
    Case("yaml-alias-bomb", lambda t: nemo_with(config=_alias_bomb()), CheckpointError, "alias bomb"),
    Case("yaml-recursive-alias", lambda t: nemo_with(config=(yaml_text() + "loop: &l [*l]\n").encode()), CheckpointError,
         "recursive alias"),
    Case("yaml-nested-too-deep", lambda t: nemo_with(config=(yaml_text() + "deep: " + "[" * 5000 + "]" * 5000 + "\n").encode()),
         CheckpointError, "nested too deeply"),
    # -- not an archive, truncated, corrupt ---------------------------------------------------
    Case("empty-file", lambda t: b"", CheckpointError, "empty"),
    Case("not-a-tar", lambda t: bytes(range(256)) * 40, CheckpointError, "not a .nemo archive"),
    Case("a-zip-file", lambda t: _zip_of({CONFIG: base_members()[CONFIG], WEIGHTS: base_members()[WEIGHTS]}), CheckpointError,
         "it is a zip file"),
    Case("a-bzip2-tar", lambda t: _bz2(BASE_NEMO.read_bytes()), CheckpointError, "it is a bzip2 file"),
    Case("gzip-of-garbage", lambda t: gzip.compress(b"hello" * 1000, mtime=0), CheckpointError, "not a .nemo archive"),
    Case("truncated-tar", lambda t: BASE_NEMO.read_bytes()[: BASE_NEMO.stat().st_size // 2], CheckpointError,
         "truncated"),
    Case("truncated-gzip-tar", lambda t: tar_of(nemo_entries(), gz=True)[:200_000], CheckpointError,
         r"declares \d+ bytes, .* past its \d+-byte limit \(8x the 200000 bytes .* the file is truncated"),
    Case("truncated-gzip-tar-within-8x", lambda t: tar_of(nemo_entries(), gz=True)[:1_500_000], CheckpointError,
         "corrupt or truncated"),
    Case("truncated-weights-inside-intact-tar", lambda t: nemo_with(weights=base_members()[WEIGHTS][:100_000]),
         CheckpointError, "not a readable torch checkpoint"),
    Case("missing-yaml", lambda t: nemo_with(config=None), CheckpointError, f"no {CONFIG} in the archive"),
    Case("missing-weights", lambda t: nemo_with(weights=None), CheckpointError, f"no {WEIGHTS} in the archive"),
    Case("duplicate-weights", lambda t: tar_of(nemo_entries() + [entry(WEIGHTS, base_members()[WEIGHTS])]), CheckpointError,
         "appears twice"),
    Case("yaml-syntax-error", lambda t: nemo_with(config=b"sample_rate: [22050\n"), CheckpointError, "not valid YAML"),
    Case("yaml-not-utf8", lambda t: nemo_with(config=b"sample_rate: \xff\xfe\n"), CheckpointError, "not valid YAML"),
    Case("yaml-not-a-mapping", lambda t: nemo_with(config=b"- 1\n- 2\n"), CheckpointError, "does not hold a mapping"),
    Case("yaml-impossible-eps", lambda t: nemo_with(config=config_with(lambda c: c["vector_quantizer"].__setitem__("eps", "x"))),
         CheckpointError, "'quantizer.eps' is impossible"),
    Case("yaml-overflowing-channels",
         lambda t: nemo_with(config=config_with(lambda c: c["audio_decoder"].__setitem__("base_channels", 2**62))),
         CheckpointError, "'decoder.base_channels' is impossible"),
    Case("yaml-truthy-string-flag",
         lambda t: nemo_with(config=config_with(lambda c: c["audio_decoder"].__setitem__("n_groups_equal_to_out_channels", "no"))),
         CheckpointError, "'decoder.n_groups_equal_to_out_channels' is impossible"),
    # -- the state dict -----------------------------------------------------------------------
    Case("weights-not-a-dict", lambda t: nemo_with(weights=_zip_weights(list(base_state().values()))), CheckpointError,
         "flat name -> tensor"),
    Case("weights-value-not-a-tensor", lambda t: nemo_with(weights=weights_with(lambda s: s.__setitem__("audio_encoder.pre_conv.conv.bias", 3))),
         CheckpointError, "flat name -> tensor"),
    Case("sparse-tensor", lambda t: nemo_with(weights=weights_with(
        lambda s: s.__setitem__("audio_encoder.pre_conv.conv.bias", s["audio_encoder.pre_conv.conv.bias"].to_sparse()))),
         CheckpointError, "audio_encoder.pre_conv.conv.bias is a sparse tensor"),
    Case("missing-tensor", lambda t: nemo_with(weights=weights_with(lambda s: s.pop("audio_decoder.post_conv.conv.bias"))),
         CheckpointError, r"1 missing \(e\.g\. \['decoder\.post_conv\.bias'\]"),
    Case("missing-weight-norm-half", lambda t: nemo_with(weights=weights_with(
        lambda s: s.pop("audio_encoder.pre_conv.conv.parametrizations.weight.original0"))),
         CheckpointError, "encoder.pre_conv: weight norm needs exactly one g and one v"),
    Case("unexpected-tensor", lambda t: nemo_with(weights=weights_with(
        lambda s: s.__setitem__("audio_decoder.up_sample_conv_layers.99.conv.bias", torch.zeros(3)))),
         CheckpointError, r"1 unexpected \(e\.g\. \['decoder\.up_convs\.99\.bias'\]"),
    Case("unknown-tensor-name", lambda t: nemo_with(weights=weights_with(lambda s: s.__setitem__("optimizer.state.0", torch.zeros(1)))),
         CheckpointError, "match no mapping or drop rule"),
    Case("wrong-shape-bias", lambda t: nemo_with(weights=weights_with(
        lambda s: s.__setitem__("audio_decoder.post_conv.conv.bias", torch.zeros(2)))),
         CheckpointError, r"decoder\.post_conv\.bias has shape \[2\], the config implies \[1\]"),
    Case("wrong-shape-weight-norm", lambda t: nemo_with(weights=weights_with(
        lambda s: s.__setitem__("audio_encoder.pre_conv.conv.parametrizations.weight.original0", torch.ones(3, 1, 1)))),
         CheckpointError, "weight-norm g .* does not fit v"),
    Case("wrong-dtype-int-bias", lambda t: nemo_with(weights=weights_with(
        lambda s: s.__setitem__("audio_decoder.post_conv.conv.bias", torch.zeros(1, dtype=torch.int32)))),
         CheckpointError, r"decoder\.post_conv\.bias has dtype torch\.int32"),
    Case("wrong-dtype-complex-weight-norm", lambda t: nemo_with(weights=weights_with(lambda s: (
        s.__setitem__("audio_encoder.pre_conv.conv.parametrizations.weight.original0", torch.ones(2, 1, 1, dtype=torch.complex64)),
        s.__setitem__("audio_encoder.pre_conv.conv.parametrizations.weight.original1", torch.ones(2, 1, 7, dtype=torch.complex64))))),
         CheckpointError, "must share a floating dtype"),
    Case("nan-in-weight-norm-v", lambda t: nemo_with(weights=weights_with(
        set_value("audio_decoder.post_conv.conv.parametrizations.weight.original1", 0, float("nan")))),
         CheckpointError, r"decoder\.post_conv\.weight holds NaN or Inf"),
    Case("inf-in-snake-alpha", lambda t: nemo_with(weights=weights_with(
        set_value("audio_decoder.activations.0.activation.snake_act.alpha", 3, float("inf")))),
         CheckpointError, r"decoder\.activations\.0\.alpha holds NaN or Inf"),
    Case("minus-inf-in-bias", lambda t: nemo_with(weights=weights_with(
        set_value("audio_encoder.pre_conv.conv.bias", 1, float("-inf")))),
         CheckpointError, r"encoder\.pre_conv\.bias holds NaN or Inf"),
    Case("float64-beyond-float32-range", lambda t: nemo_with(weights=weights_with(lambda s: s.__setitem__(
        "audio_decoder.post_conv.conv.bias", torch.tensor([1e300], dtype=torch.float64)))),
         CheckpointError, r"decoder\.post_conv\.bias holds NaN or Inf"),
    Case("zero-weight-norm-v", lambda t: nemo_with(weights=weights_with(lambda s: s.__setitem__(
        "audio_decoder.post_conv.conv.parametrizations.weight.original1", torch.zeros(1, 3, 3)))),
         CheckpointError, r"decoder\.post_conv\.weight holds NaN or Inf"),
]


def _zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def _bz2(data: bytes) -> bytes:
    import bz2

    return bz2.compress(data)


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1) for p in sorted(root.rglob("*"))}


class CountingGzip(gzip.GzipFile):
    """Records how far into the inflated stream the reader ever got."""

    high_water = 0

    def _note(self):
        pos = super().seek(0, io.SEEK_CUR)  # GzipFile.tell() itself calls seek()
        CountingGzip.high_water = max(CountingGzip.high_water, pos)

    def read(self, *args):
        data = super().read(*args)
        self._note()
        return data

    def seek(self, *args):
        pos = super().seek(*args)
        self._note()
        return pos


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_checkpoint_is_refused(case, tmp_path, monkeypatch):
    src = tmp_path / "src" / f"{case.name}.nemo"
    src.parent.mkdir()
    src.write_bytes(case.build(tmp_path))
    cwd = tmp_path / "cwd" / "a" / "b"  # '../..' from here still lands inside tmp_path
    cwd.mkdir(parents=True)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "model"
    monkeypatch.chdir(cwd)
    for name, value in case.patch.items():
        monkeypatch.setattr(archive, name, value)
    monkeypatch.setattr(archive.gzip, "GzipFile", CountingGzip)
    CountingGzip.high_water = 0
    before = tree(tmp_path)
    start = time.monotonic()
    with pytest.raises(CheckpointError) as info:
        convert(str(src), str(out))
    elapsed = time.monotonic() - start
    assert type(info.value) is case.error, f"{type(info.value).__name__}: {info.value}"
    assert info.match(case.match)
    assert tree(tmp_path) == before  # no output, no temp sibling, nothing extracted anywhere
    assert not (tmp_path / MARKER).exists()
    if case.max_inflated is not None:
        assert CountingGzip.high_water <= case.max_inflated, f"inflated {CountingGzip.high_water} bytes"
        assert elapsed < 30


def test_suite_has_enough_cases():
    assert len(CASES) >= 15 and len({c.name for c in CASES}) == len(CASES)


def test_output_folder_keeps_previous_conversion(tmp_path, base_folder):
    """Refused while replacing (--overwrite): the previous output stays intact, no temp leftovers."""
    import shutil

    out = tmp_path / "model"
    shutil.copytree(base_folder, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = tmp_path / "bad.nemo"
    bad.write_bytes(nemo_with(weights=weights_with(set_value("audio_encoder.pre_conv.conv.bias", 0, float("nan")))))
    with pytest.raises(CheckpointError, match="NaN"):
        convert(str(bad), str(out), overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.nemo", "model"]


@pytest.mark.parametrize("name", ["symlink-as-weights", "gzip-bomb-weights-16GiB"])
def test_cli_refuses_with_one_line(name, tmp_path):
    case = next(c for c in CASES if c.name == name)
    src = tmp_path / "x.nemo"
    src.write_bytes(case.build(tmp_path))
    r = subprocess.run([sys.executable, "-m", "convert", str(src), str(tmp_path / "out")], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nemo"]


# ---------------------------------------------------------------------------------------------
# legitimate variants still load, to the same weights
# ---------------------------------------------------------------------------------------------
def _reordered() -> bytes:
    m = base_members()
    return tar_of([entry("./" + WEIGHTS, m[WEIGHTS]), entry(".", type=tarfile.DIRTYPE), entry("./" + CONFIG, m[CONFIG])])


LEGIT = {
    "plain-tar-no-dot-prefix-no-dir-entry": lambda: tar_of(nemo_entries(prefix="")[1:]),
    "gzip-with-dot-prefix-and-dir-entry": lambda: tar_of(nemo_entries(), gz=True),
    "gnu-format-tar": lambda: tar_of(nemo_entries(), fmt=tarfile.GNU_FORMAT),
    "ustar-format-tar": lambda: tar_of(nemo_entries(), fmt=tarfile.USTAR_FORMAT),
    "weights-before-yaml": _reordered,
    "directories-and-unknown-members": lambda: tar_of(nemo_entries({**base_members(), "notes/readme.txt": b"hi"})
                                                      + [entry("./notes", type=tarfile.DIRTYPE), entry("./empty_dir/", type=tarfile.DIRTYPE)]),
    "legacy-weight-norm-gzip": lambda: tar_of(nemo_entries({
        CONFIG: base_members()[CONFIG], WEIGHTS: derive.save_weights(derive.legacy_weight_norm_state(base_state()))}), gz=True),
    "state-dict-wrapper": lambda: nemo_with(weights=derive.save_weights({"state_dict": base_state()})),
    "legacy-torch-serialization": lambda: nemo_with(weights=legacy_weights(base_state())),
}


@pytest.mark.parametrize("name", list(LEGIT))
def test_legitimate_variant_converts_to_the_same_weights(name, tmp_path, base_folder):
    src = tmp_path / "v.nemo"
    src.write_bytes(LEGIT[name]())
    report = convert(str(src), str(tmp_path / "out"))
    got = load_file(str(tmp_path / "out" / "model.safetensors"))
    want = load_file(str(base_folder / "model.safetensors"))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    if name == "directories-and-unknown-members":
        assert report.ignored_members == ["notes/readme.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "v.nemo"]


def test_limits_are_the_documented_ones():
    assert archive.MAX_YAML_BYTES == 1 << 20 and archive.MAX_WEIGHTS_BYTES == 4 << 30 and archive.MAX_MEMBERS == 16
    assert archive.MAX_INFLATE_FACTOR == 8 and archive.INFLATE_SLACK_BYTES == 1 << 20
    assert archive.MAX_OTHER_BYTES == 64 << 20
    assert archive.data_limit(10 << 20)[0] == 8 * (10 << 20) + (1 << 20)  # 8x on disk + 1 MiB ...
    assert archive.data_limit(1 << 40)[0] == (4 << 30) + (65 << 20)  # ... and never past 4 GiB + 65 MiB


def test_real_size_checkpoint_fits_the_limits():
    """The official 0.6 kbps model (61.76M inference parameters) saved with NeMo's full-size
    discriminator (recorded in full_discriminator_spec.json: 42.9M) is about 420 MB: as a plain tar,
    and as a tar.gz (float32 weights barely compress: ~0.9x), it fits; so does issue 16's 166 MB
    legacy .nemo of a small generator with full-size discriminators."""
    from nanocodec import AudioCodecModel
    from nanocodec.presets import PRESETS

    with torch.device("meta"):
        model = AudioCodecModel(PRESETS["nanocodec-22khz-0.6kbps-12.5fps"].config())
    generator = 4 * sum(t.numel() for t in model.state_dict().values())
    total = generator + derive.load_discriminator_spec(FULL_DISCRIMINATOR_SPEC)["bytes_float32"]
    assert 400e6 < total < 440e6 and total < archive.MAX_WEIGHTS_BYTES
    stream = total + archive.MAX_YAML_BYTES + (64 << 10)  # weights, yaml, headers: the tar stream
    assert archive.data_limit(stream)[0] >= stream  # a plain tar: the stream is the file
    assert archive.data_limit(int(0.9 * stream))[0] >= stream  # a tar.gz
    assert archive.data_limit(166303913)[0] >= 166303913  # issue 16's file


# ---------------------------------------------------------------------------------------------
# issue 16: a small generator saved with full-size discriminators is legitimate
# ---------------------------------------------------------------------------------------------
def test_full_discriminator_spec_is_full_size():
    """Recorded from NeMo 3.0.0 by parity/oracle/record_full_discriminator.py: shapes, no values."""
    spec = derive.load_discriminator_spec(FULL_DISCRIMINATOR_SPEC)
    n = sum(math.prod(t["shape"]) for t in spec["tensors"])
    assert n == spec["n_elements"] and 4 * n == spec["bytes_float32"] and 150e6 < 4 * n < 200e6
    assert all("values" not in t for t in spec["tensors"]) and len(spec["tensors"]) == spec["n_tensors"]
    assert [d["_target_"].rsplit(".", 1)[1] for d in spec["config"]["discriminators"]] == [
        "MultiResolutionDiscriminatorSTFT", "MultiPeriodDiscriminator", "SLMDiscriminator"]


@pytest.fixture(scope="module")
def full_discriminator_nemos(tmp_path_factory) -> dict[str, Path]:
    """The base generator with NeMo's full-size discriminator tensors (recorded keys and shapes, seeded
    values) and its `discriminator:` section, as NeMo writes it, and in the legacy weight_g/weight_v
    form (issue 16's checkpoint: 166 MB, refused by the old config-implied limit)."""
    folder = tmp_path_factory.mktemp("full_disc")
    plain = derive.derive_with_discriminator(BASE_NEMO, folder / "plain.nemo", FULL_DISCRIMINATOR_SPEC)
    members = derive.read_nemo(plain)
    members[WEIGHTS] = derive.save_weights(derive.legacy_weight_norm_state(derive.load_weights(members[WEIGHTS])))
    legacy = derive.write_nemo(folder / "legacy.nemo", members)
    return {"nemo-layout": plain, "legacy-weight-norm": legacy}


@pytest.mark.parametrize("form", ["nemo-layout", "legacy-weight-norm"])
def test_small_generator_with_full_size_discriminators_converts(form, full_discriminator_nemos, tmp_path, base_folder,
                                                               one_thread):
    from nanocodec import AudioCodecModel
    from parity import fixtures, run

    spec = derive.load_discriminator_spec(FULL_DISCRIMINATOR_SPEC)
    src = full_discriminator_nemos[form]
    assert src.stat().st_size > spec["bytes_float32"] > 50 * BASE_NEMO.stat().st_size
    report = convert(str(src), str(tmp_path / "out"))
    assert report.dropped["discriminator"] == spec["n_tensors"]
    got = load_file(str(tmp_path / "out" / "model.safetensors"))
    want = load_file(str(base_folder / "model.safetensors"))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert (tmp_path / "out" / "config.json").read_bytes() == (base_folder / "config.json").read_bytes()
    if form == "nemo-layout":  # NeMo's outputs (the base's committed references), under contracts §5
        case = next(c for c in fixtures.model_cases() if c.name == derive.DERIVED_BASE)
        model = AudioCodecModel.from_pretrained(tmp_path / "out")
        name = "speech_0p5s"
        record = run.compare_item(model, case.name, name, fixtures.read_input(name), fixtures.read_ref(case, name),
                                  with_pesq=False)
        assert record.ok, record.to_dict()
