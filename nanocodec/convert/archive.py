"""Reading a `.nemo` archive safely: nothing is extracted to disk and nothing runs.

A `.nemo` is a tar (or, before NeMo 1.7, a tar.gz) holding `model_config.yaml` and
`model_weights.ckpt`, usually as `./name` next to a `.` directory entry. Limits, stated here
and in the README, bound what a legitimate checkpoint can hold, whatever the generator's size
(a small generator trained with full-size discriminators is legitimate: the limits never depend on
the config):

- `model_config.yaml` ≤ 1 MiB (`MAX_YAML_BYTES`), at most `MAX_YAML_NODES` YAML nodes once
  aliases are expanded (no "billion laughs"), no `!!python/...` tags;
- `model_weights.ckpt` ≤ 4 GiB (`MAX_WEIGHTS_BYTES`); torch's zip format with stored
  (uncompressed) records only;
- ≤ 16 members (`MAX_MEMBERS`); pax / GNU long-name headers ≤ 64 KiB each;
- the tar stream as a whole (headers and every member's data, as it is read and decompressed)
  ≤ 8× the file's size on disk plus 1 MiB (`MAX_INFLATE_FACTOR`, `INFLATE_SLACK_BYTES`), and
  ≤ weights limit + yaml limit + 64 MiB (`MAX_OTHER_BYTES`). Every member's declared size is
  checked against these limits from its header, before its data is read or skipped: a gzip bomb
  is refused without inflating it.

Directory entries are ignored; unknown regular members are skipped and reported. Links,
devices and other special members, absolute paths and `..` are `UnsafeCheckpointError`, as is
any pickle or YAML that would construct objects. A member that is itself an archive (tar,
gzip, bzip2, xz; or zip in place of the yaml) where the yaml or the weights should be, a
member past a limit, a truncated or corrupt archive are `CheckpointError`.
"""
from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import torch
import yaml

from nanocodec.errors import CheckpointError, UnsafeCheckpointError

MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 1 << 20
MAX_WEIGHTS_BYTES = 4 << 30
# A plain tar holds at most its own size; the float32 weights torch saves barely compress (gzip of the
# committed 2-3 MB fixtures is 0.75-0.8x their size, of the 174 MB one with NeMo's full-size
# discriminators 0.93x; the 0.3 MB tar.gz fixtures, mostly zip padding, inflate 2x), so a .nemo whose
# data inflates past 8x its size on disk is not a checkpoint. The slack covers tiny archives (a few KB
# of headers and padding).
MAX_INFLATE_FACTOR = 8
INFLATE_SLACK_BYTES = 1 << 20
MAX_MEMBERS = 16
MAX_HEADER_BYTES = 64 << 10
MAX_OTHER_BYTES = 64 << 20
CONFIG_MEMBER = "model_config.yaml"
WEIGHTS_MEMBER = "model_weights.ckpt"

_PYTHON_TAG = "tag:yaml.org,2002:python/"
_META_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
               tarfile.SOLARIS_XHDTYPE)


@dataclass
class NemoArchive:
    config: dict
    state_dict: dict[str, torch.Tensor]
    ignored_members: list[str] = field(default_factory=list)


class _OverLimit(Exception):
    """Raised inside tarfile's reading machinery; turned into a CheckpointError naming the source."""


class _GuardedTarInfo(tarfile.TarInfo):
    """Refuses an oversized pax / GNU long-name header before tarfile reads it into memory
    (`_proc_member` is tarfile's documented hook for subclasses)."""

    def _proc_member(self, tarfile_):
        if self.type in _META_TYPES and self.size > MAX_HEADER_BYTES:
            raise _OverLimit(f"an extended (pax / long-name) header of {self.size} bytes, over the {MAX_HEADER_BYTES}-byte limit")
        return super()._proc_member(tarfile_)


class _BoundedReader:
    """A read-only file view that refuses to read or seek past `limit` bytes of the (decompressed)
    stream: the budget that stops a decompression bomb whatever tarfile does internally."""

    def __init__(self, f, limit: int):
        self._f = f
        self.limit = limit

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self._f.tell()
        elif whence != 0:
            raise io.UnsupportedOperation("seek from the end")
        if pos > self.limit:
            raise _OverLimit(f"more than {self.limit} bytes of data in all")
        return self._f.seek(pos)

    def read(self, n: int = -1) -> bytes:
        pos = self._f.tell()
        room = self.limit - pos
        if n is None or n < 0 or n > room + 1:
            n = max(room + 1, 0)
        data = self._f.read(n)
        if pos + len(data) > self.limit:
            raise _OverLimit(f"more than {self.limit} bytes of data in all")
        return data


def _member_name(member: tarfile.TarInfo, source) -> str:
    name = member.name
    path = PurePosixPath(name)
    if name.startswith("/") or path.is_absolute():
        raise UnsafeCheckpointError(f"{source}: member {name!r} has an absolute path; refusing this archive")
    if ".." in path.parts:
        raise UnsafeCheckpointError(f"{source}: member {name!r} points outside the archive ('..'); refusing it")
    parts = [p for p in path.parts if p != "."]
    return "/".join(parts)


def archive_kind(data: bytes) -> str | None:
    """The kind of archive `data` is by its magic bytes (tar by a valid header), else None."""
    if data[:2] == b"\x1f\x8b":
        return "gzip"
    if data[:3] == b"BZh":
        return "bzip2"
    if data[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if len(data) >= tarfile.BLOCKSIZE:
        try:
            tarfile.TarInfo.frombuf(data[: tarfile.BLOCKSIZE], "utf-8", "surrogateescape")
            return "tar"  # a header with a valid checksum (ustar, gnu or v7)
        except tarfile.HeaderError:
            pass
    return None


def data_limit(disk_bytes: int, max_weights_bytes: int | None = None) -> tuple[int, str]:
    """(limit, why): the most bytes the tar stream of a `.nemo` taking `disk_bytes` on disk may
    hold, headers and (decompressed) data together, and the rule that sets it, in words."""
    max_weights = MAX_WEIGHTS_BYTES if max_weights_bytes is None else max_weights_bytes
    absolute = max_weights + MAX_YAML_BYTES + MAX_OTHER_BYTES
    on_disk = MAX_INFLATE_FACTOR * disk_bytes + INFLATE_SLACK_BYTES
    if on_disk < absolute:
        return on_disk, (f"{MAX_INFLATE_FACTOR}x the {disk_bytes} bytes the file takes on disk, plus "
                         f"{INFLATE_SLACK_BYTES >> 20} MiB: a checkpoint's float32 weights barely compress")
    return absolute, (f"the {max_weights}-byte weights limit, plus {MAX_YAML_BYTES >> 20} MiB of yaml and "
                      f"{MAX_OTHER_BYTES >> 20} MiB of other members")


def _open_stream(raw, source):
    head = raw.read(tarfile.BLOCKSIZE)
    raw.seek(0)
    if not head:
        raise CheckpointError(f"{source} is empty (0 bytes); not a .nemo archive")
    kind = archive_kind(head)
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if kind in ("bzip2", "xz", "zip"):
        raise CheckpointError(f"{source} is not a .nemo archive: it is a {kind} file (NeMo writes a plain or gzip tar)")
    return raw


def read_nemo(path, *, max_weights_bytes: int | None = None) -> NemoArchive:
    """Read `model_config.yaml` and `model_weights.ckpt` from the `.nemo` at `path`, in memory.

    `max_weights_bytes` lowers the weights limit (default `MAX_WEIGHTS_BYTES`); the limit on the
    archive's data in all (`data_limit`) applies as well."""
    source = str(path)
    max_weights = MAX_WEIGHTS_BYTES if max_weights_bytes is None else max_weights_bytes
    raw: dict[str, bytes] = {}
    ignored: list[str] = []
    config = None
    bomb = "the file is truncated, not a .nemo checkpoint, or a decompression bomb"

    try:
        f = open(source, "rb")
    except OSError as e:
        raise CheckpointError(f"{source}: cannot read it: {e.strerror or e}") from None
    with f:
        budget, why = data_limit(os.fstat(f.fileno()).st_size, max_weights)
        try:
            stream = _BoundedReader(_open_stream(f, source), budget)
            tar = tarfile.open(fileobj=stream, mode="r:", tarinfo=_GuardedTarInfo)
        except _OverLimit as e:
            raise CheckpointError(f"{source}: {e} (the limit: {why}); {bomb}") from None
        except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as e:
            raise CheckpointError(f"{source} is not a .nemo archive (not a readable tar): {e}") from None
        with tar:
            count = 0
            while True:
                try:
                    member = tar.next()
                    if member is None:
                        break
                    count += 1
                    if count > MAX_MEMBERS:
                        raise CheckpointError(f"{source}: more than {MAX_MEMBERS} members; not a .nemo checkpoint")
                    name = _member_name(member, source)
                    if member.isdir():
                        continue
                    if member.issym() or member.islnk():
                        raise UnsafeCheckpointError(
                            f"{source}: member {member.name!r} is a link (to {member.linkname!r}); refusing this archive"
                        )
                    if not member.isfile():
                        raise UnsafeCheckpointError(
                            f"{source}: member {member.name!r} is a device, fifo or other special file; refusing it"
                        )
                    if member.issparse():
                        raise CheckpointError(f"{source}: member {member.name!r} is a sparse file; NeMo never writes those")
                    # every declared size is checked from the header, before the data is read or skipped
                    if name == CONFIG_MEMBER and member.size > MAX_YAML_BYTES:
                        raise CheckpointError(f"{source}: {name} is {member.size} bytes, over the {MAX_YAML_BYTES}-byte limit")
                    if name == WEIGHTS_MEMBER and member.size > max_weights:
                        raise CheckpointError(
                            f"{source}: {WEIGHTS_MEMBER} is {member.size} bytes, over the {max_weights}-byte limit on a "
                            "checkpoint's weights; not a .nemo checkpoint"
                        )
                    if member.offset_data + member.size > budget:
                        raise CheckpointError(
                            f"{source}: member {member.name!r} declares {member.size} bytes, which would take the "
                            f"archive's data to {member.offset_data + member.size} bytes, past its {budget}-byte limit "
                            f"({why}); {bomb}"
                        )
                    if name not in (CONFIG_MEMBER, WEIGHTS_MEMBER):
                        ignored.append(name)
                        continue
                    if name in raw:
                        raise CheckpointError(f"{source}: member {name} appears twice")
                    data = tar.extractfile(member).read(member.size + 1)
                    if len(data) != member.size:
                        raise CheckpointError(f"{source}: {name} is truncated ({len(data)} of {member.size} bytes)")
                except _OverLimit as e:
                    raise CheckpointError(f"{source}: {e} (the limit: {why}); {bomb}") from None
                except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as e:
                    raise CheckpointError(f"{source}: the archive is corrupt or truncated: {e}") from None
                _refuse_nested(name, data, source)
                raw[name] = data
                if name == CONFIG_MEMBER:
                    config = parse_yaml(data, source)
    for name in (CONFIG_MEMBER, WEIGHTS_MEMBER):
        if name not in raw:
            raise CheckpointError(f"{source}: no {name} in the archive; not a NeMo model checkpoint")
    state = load_weights(raw.pop(WEIGHTS_MEMBER), source)
    return NemoArchive(config, state, ignored)


def _refuse_nested(name: str, data: bytes, source) -> None:
    kind = archive_kind(data)
    if kind is None or (name == WEIGHTS_MEMBER and kind == "zip"):  # torch.save writes a zip
        return
    raise CheckpointError(
        f"{source}: {name} is itself a {kind} archive, not a {'YAML file' if name == CONFIG_MEMBER else 'torch checkpoint'}; "
        "a .nemo holds the files directly (repack it)"
    )


def parse_yaml(data: bytes, source) -> dict:
    try:
        text = data.decode("utf-8")
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()  # compose only: nothing is constructed yet
            if node is not None:
                _check_yaml_nodes(node, source)
            conf = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.constructor.ConstructorError as e:
        raise CheckpointError(f"{source}: {CONFIG_MEMBER} holds a value YAML cannot build safely: {e.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{source}: {CONFIG_MEMBER} is not valid YAML: {e}") from None
    except RecursionError:
        raise CheckpointError(f"{source}: {CONFIG_MEMBER} is nested too deeply to be a model config") from None
    if not isinstance(conf, dict):
        raise CheckpointError(f"{source}: {CONFIG_MEMBER} does not hold a mapping")
    if isinstance(conf.get("model"), dict):  # NeMo: `if 'model' in conf: conf = conf.model`
        conf = conf["model"]
    return conf


def _check_yaml_nodes(root, source) -> None:
    """Refuse python tags, recursive aliases and alias bombs, walking the composed node graph
    iteratively (a deep document cannot exhaust the stack here)."""
    sizes: dict[int, int] = {}  # id(node) -> nodes it expands to (capped)
    on_path: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if done:
            on_path.discard(key)
            sizes[key] = min(MAX_YAML_NODES + 1, 1 + sum(sizes[id(c)] for c in children))
            if sizes[key] > MAX_YAML_NODES:
                raise CheckpointError(
                    f"{source}: {CONFIG_MEMBER} expands to more than {MAX_YAML_NODES} YAML nodes through its aliases "
                    "(an alias bomb); not a model config"
                )
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise CheckpointError(f"{source}: {CONFIG_MEMBER} holds a recursive alias; not a model config")
        if isinstance(node.tag, str) and node.tag.startswith(_PYTHON_TAG):
            raise UnsafeCheckpointError(
                f"{source}: {CONFIG_MEMBER} uses the tag {node.tag!r}, which would construct Python objects "
                "(refused, nothing was run)"
            )
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)


def _check_torch_zip(data: bytes, source) -> None:
    """torch.save writes a zip of stored records: refuse compressed records (a zip bomb inside
    the weights) and records that claim more bytes than the file holds."""
    try:
        infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"{source}: {WEIGHTS_MEMBER} is not a readable torch checkpoint (bad zip: {e})") from None
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(
                f"{source}: {WEIGHTS_MEMBER} record {info.filename!r} is compressed; torch.save never writes "
                "compressed records (a zip bomb?)"
            )
        if info.file_size > len(data):
            raise CheckpointError(f"{source}: {WEIGHTS_MEMBER} record {info.filename!r} claims {info.file_size} bytes, more than the file holds")


def load_weights(data: bytes, source) -> dict[str, torch.Tensor]:
    if archive_kind(data) == "zip":
        _check_torch_zip(data, source)
    try:
        # weights_only: tensors and plain containers only; a pickle that would run code is refused
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's text goes on to suggest weights_only=False: keep only its reason
        m = re.search(r"WeightsUnpickler error:\s*(.*?)(?: Please use|\n|$)", str(e), re.S)
        reason = m.group(1).strip() if m else str(e).splitlines()[0]
        raise UnsafeCheckpointError(
            f"{source}: {WEIGHTS_MEMBER} contains objects beyond tensors (refused, nothing was run): {reason}"
        ) from None
    except Exception as e:  # noqa: BLE001  torch raises RuntimeError/EOFError/zipfile errors for corrupt data
        raise CheckpointError(f"{source}: {WEIGHTS_MEMBER} is not a readable torch checkpoint: {e}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{source}: {WEIGHTS_MEMBER} is not a flat name -> tensor state dict")
    for key, tensor in state.items():
        kind = ("sparse" if tensor.layout != torch.strided else "nested" if tensor.is_nested
                else "quantized" if tensor.is_quantized else tensor.device.type if tensor.device.type != "cpu" else None)
        if kind:
            raise CheckpointError(f"{source}: tensor {key} is a {kind} tensor; a NeMo checkpoint holds plain dense tensors")
    return dict(state)
