"""`nanocodec tokenize --engine ray` (nanocodec/apps/ray_engine.py) on a local, loopback-only Ray cluster:
the same shards (byte for byte) and manifests as the single-process engine, resume across engines,
incremental additions, an encode actor SIGKILLed mid-run, and a file that kills its actor every time."""
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray engine needs the [ray] extra: pip install 'nanocodec[ray]'")
pytest.importorskip("ray.data", reason="the Ray engine needs ray[data]: pip install 'nanocodec[ray]'")

from ray import cloudpickle  # noqa: E402  (the copy Ray pickles functions and classes with)

from nanocodec import token_files  # noqa: E402
from nanocodec.apps import corpus as tk  # noqa: E402
from nanocodec.apps import ray_engine  # noqa: E402
from nanocodec.apps.cli import main  # noqa: E402
from nanocodec.errors import InvalidInputError  # noqa: E402
from test_tokenize import BATCH, SHARD, add_files, inodes, make_corpus, manifest, snapshot  # noqa: E402
from test_tokenize import model  # noqa: E402,F401  (the module fixture)

pytestmark = [
    pytest.mark.usefixtures("one_thread"),  # the local engine's threads = each encoder's (1)
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),  # Ray's own settings
]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster on 127.0.0.1 with 2 CPUs, for this module only."""
    if ray.is_initialized():
        ray.shutdown()
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(num_cpus=2, num_gpus=0, address="local", include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 2**20, _node_ip_address="127.0.0.1", _temp_dir=temp)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the Encoder subclass below, for the workers
    yield
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("ray") / "corpus")


@pytest.fixture(scope="module")
def local(model, corpus, tmp_path_factory):  # noqa: F811
    """The single-process engine's output: what the Ray engine must write, byte for byte."""
    out = tmp_path_factory.mktemp("local") / "out"
    res = tk.tokenize(corpus, out, model, model_ref=str(model.folder), shard_size=SHARD, batch_size=BATCH,
                      progress=False, log=lambda m: None)
    return out, res, snapshot(out)


def on_ray(model, corpus, out, **kw):  # noqa: F811
    kw.setdefault("workers", 2)
    return ray_engine.tokenize(corpus, out, model, model_ref=str(model.folder), shard_size=SHARD, batch_size=BATCH,
                               progress=False, log=lambda m: None, **kw)


def tokens_by_path(out: Path) -> dict:
    return {e["path"]: token_files.read(out / e["shard"]).tokens[e["key"]].numpy().tobytes() for e in manifest(out)}


def test_ray_engine_writes_what_the_local_engine_writes(model, cluster, corpus, local, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    res = on_ray(model, corpus, out)
    ref_out, ref_res, ref = local
    assert (res.files, res.shards, res.encoded, sorted(res.failed)) == \
        (ref_res.files, ref_res.shards, ref_res.encoded, sorted(ref_res.failed))
    # per file, path -> tokens; then the manifests; then every file byte for byte
    assert tokens_by_path(out) == tokens_by_path(ref_out) and len(tokens_by_path(out)) == 6
    assert manifest(out) == manifest(ref_out)
    assert (out / tk.ERRORS).read_bytes() == (ref_out / tk.ERRORS).read_bytes()
    assert snapshot(out) == ref
    # a finished output folder: nothing to do, on either engine
    again = on_ray(model, corpus, out)
    assert (again.shards_skipped, again.encoded) == (3, 0) and snapshot(out) == ref


def test_resume_across_engines(model, cluster, corpus, local, tmp_path):  # noqa: F811
    """A local run cut short (shard 1 lost, a torn manifest line) is finished by the Ray engine."""
    out = tmp_path / "out"
    shutil.copytree(local[0], out)
    (out / "shard-000001.safetensors").unlink()
    with open(out / tk.MANIFEST, "a") as f:
        f.write('{"path": "len_1.wav", "sha2')
    res = on_ray(model, corpus, out, workers=1)
    assert (res.shards_skipped, res.encoded) == (2, 2)  # shard 1: len_1.wav, len_1763.wav (empty.wav fails)
    assert snapshot(out) == local[2]


class DiesOnce(ray_engine.Encoder):
    """Kills its own process (SIGKILL, as an OOM kill or a lost node would) on the first batch of
    shard 1 it sees while the marker file exists; the marker is removed first, so the restarted
    actor encodes that batch."""

    marker = None  # set by a subclass

    def __call__(self, row):
        if row["shard"] == "shard-000001.safetensors":
            try:
                Path(self.marker).unlink()
            except FileNotFoundError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(row)


def test_an_encoder_killed_mid_run_loses_and_duplicates_nothing(model, cluster, corpus, local, tmp_path):  # noqa: F811
    marker = tmp_path / "kill-me"
    marker.write_text("")
    kill_once = type("KillOnce", (DiesOnce,), {"marker": str(marker)})
    out = tmp_path / "out"
    res = on_ray(model, corpus, out, encoder_cls=kill_once)
    assert not marker.exists(), "the actor was not killed"
    assert res.encoded == local[1].encoded and res.shards_skipped == 0
    paths = [e["path"] for e in manifest(out)]
    assert len(paths) == len(set(paths)) == 6
    assert snapshot(out) == local[2]


class FailsOnShard2(ray_engine.Encoder):
    def encode(self, row):
        if row["shard"] == "shard-000002.safetensors":
            raise RuntimeError("a bug in an encoder")
        return super().encode(row)


def test_a_failed_job_says_so_and_a_rerun_resumes(model, cluster, corpus, local, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    expected = r"RuntimeError: a bug in an encoder\); .* rerun the same command to resume"
    with pytest.raises(ray_engine.RayJobError, match=expected):
        on_ray(model, corpus, out, workers=1, encoder_cls=FailsOnShard2)
    assert not (out / "shard-000002.safetensors").exists()
    assert all(e["shard"] != "shard-000002.safetensors" for e in manifest(out))
    # the rerun (here the local engine: a Ray rerun is test_resume_across_engines) finishes the job
    res = tk.tokenize(corpus, out, model, model_ref=str(model.folder), shard_size=SHARD, batch_size=BATCH,
                      progress=False, log=lambda m: None)
    assert res.shards_skipped < 3 and res.encoded >= 2 and snapshot(out) == local[2]


def test_additions_on_ray_encode_only_the_new_files(model, cluster, corpus, local, tmp_path):  # noqa: F811
    grown = tmp_path / "corpus"
    shutil.copytree(corpus, grown)
    add_files(grown)
    out, ref = tmp_path / "out", tmp_path / "ref"
    for d in (out, ref):
        shutil.copytree(local[0], d)
    old = inodes(out)
    res = on_ray(model, grown, out, workers=1)
    assert (res.encoded, res.new, res.kept, res.shards_skipped, res.shards) == (4, 4, 8, 3, 5)
    assert {k: v for k, v in inodes(out).items() if k in old} == old  # old shards untouched
    tk.tokenize(grown, ref, model, model_ref=str(model.folder), shard_size=SHARD, batch_size=BATCH,
                progress=False, log=lambda m: None)
    assert snapshot(out) == snapshot(ref)


class PoisonKills(ray_engine.Encoder):
    """Test-only: the actor process exits (as a segfault or an OOM kill would end it) whenever its
    batch holds a file whose name contains "poison"."""

    def encode(self, row):
        if any("poison" in path for path in row["paths"]):
            # not at once: so that Ray Data has time to queue other rows on this actor (the case in
            # which a clean CI run once blamed an innocent file; this delay alone did not reproduce it)
            time.sleep(1.0)
            os._exit(1)
        return super().encode(row)


def test_a_file_that_kills_its_actor_is_blamed_alone_and_the_job_completes(model, cluster, corpus, local,  # noqa: F811
                                                                           tmp_path):
    poisoned = tmp_path / "corpus"
    shutil.copytree(corpus, poisoned)
    # as long as len_1763.wav, so that the two share a batch (shard 2: len_1700_poison, len_1763 | len_1764),
    # and first in the file-by-file pass: an actor left dead by it would lose len_1763.wav too
    shutil.copy(corpus / "len_1763.wav", poisoned / "len_1700_poison.wav")
    out = tmp_path / "out"
    res = on_ray(model, poisoned, out, workers=1, max_attempts=2, encoder_cls=PoisonKills)
    assert res.encoded == 6 and sorted(p for p, _ in res.failed) == ["b/corrupt.wav", "empty.wav", "len_1700_poison.wav"]
    errors = [json.loads(ln) for ln in (out / tk.ERRORS).read_text().splitlines()]
    blamed = [e for e in errors if e["path"] == "len_1700_poison.wav"]
    assert len(blamed) == 1 and "died 2 times" in blamed[0]["error"] and blamed[0]["shard"] == "shard-000002.safetensors"
    assert manifest(out) == manifest(local[0])  # its batch-mate len_1763.wav was encoded (alone)
    assert tokens_by_path(out) == tokens_by_path(local[0])
    assert all(snapshot(out)[n] == local[2][n] for n in ("shard-000000.safetensors", "shard-000001.safetensors"))


def test_cli_engine_ray(model, cluster, corpus, local, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    rc = main(["tokenize", str(corpus), "-o", str(out), "--model", str(model.folder), "--shard-size", str(SHARD),
               "--batch-size", str(BATCH), "--engine", "ray", "--workers", "1", "-q"])
    assert rc == 0 and snapshot(out) == local[2]
    assert json.loads((out / tk.STATE).read_text()) == json.loads((local[0] / tk.STATE).read_text())
    rc = main(["tokenize", str(corpus), "-o", str(tmp_path / "x"), "--model", str(model.folder), "--workers", "2"])
    assert rc == 2 and "only with --engine ray" in capsys.readouterr().err


def test_without_ray_the_engine_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InvalidInputError, match=r"nanocodec\[ray\]"):
        ray_engine.require_ray()
