"""The built wheel, installed into a fresh venv and used outside the checkout, as a pip user would (issue 18).

One module-scoped run: build the wheel from a copy of the package sources (nothing is written into the
checkout), create a venv, `pip install torch==2.13.0` first (the CPU build; asserted: no `+cu`, no
`nvidia-*` packages at any point), then the wheel. From a folder outside the checkout, with the hub
offline: `nanocodec convert` of a fixture `.nemo`; `from_pretrained` of the `.nemo`, of a folder in the
seed's re-export layout and of the converted folder; encode/decode; one CLI round trip (`encode` then
`decode` of the token file). What the wheel's venv wrote is compared here, in the checkout's pytest, with
NeMo's recorded references under contracts §5.

Cost (2-core Intel Xeon, shared with other jobs): ~2 minutes, most of it pip unpacking torch.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import BASE_NEMO, FIXTURES, ROOT
from parity.compare import AUDIO_MAX_ABS_TOL, compare_tokens, max_abs_error
from parity.fixtures import write_reexport

TORCH = "torch==2.13.0"  # the local CPU build, as the Makefile installs it
SPEECH = "speech_0p5s"
REFS = FIXTURES / "refs" / "nano0p6_replicate"
# what the wheel is built from: the package and the files pyproject.toml names
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "NOTICE", "MANIFEST.in", "nanocodec")


TIMES = []  # (command, seconds): printed with -s, for sizing the test


def run(cmd, cwd, env=None, timeout=600):
    start = time.perf_counter()
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    TIMES.append((" ".join(Path(str(c)).name for c in cmd[:4]), round(time.perf_counter() - start, 1)))
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def pip(venv, *args):
    """The checkout's pip acting on the venv (`pip --python`): the venv needs no pip of its own (saves ensurepip)."""
    return [sys.executable, "-m", "pip", "--python", venv / "bin" / "python", *args]


def installed(venv) -> dict[str, str]:
    r = run(pip(venv, "list", "--format=json"), cwd=venv)
    return {p["name"].lower(): p["version"] for p in json.loads(r.stdout)}


def assert_cpu_torch(venv):
    packages = installed(venv)
    assert "+cu" not in packages["torch"] and not packages["torch"].startswith("2.13.0+cu"), packages["torch"]
    cuda = [name for name in packages if name.startswith("nvidia-")]
    assert not cuda, f"CUDA packages were pulled in: {cuda}"


USER_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np, soundfile as sf, torch
    import nanocodec
    from nanocodec import AudioCodecModel, NanoCodecConfig

    nemo, seed, converted, wav, out = map(Path, sys.argv[1:6])
    facts = {"nanocodec_file": nanocodec.__file__, "torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("convert", "parity"):  # no generic top-level names in site-packages (contracts §3)
        try:
            __import__(name)
            facts[f"import_{name}"] = "importable"
        except ImportError:
            facts[f"import_{name}"] = "absent"
    audio, _ = sf.read(wav, dtype="float32")
    config = NanoCodecConfig.from_json((converted / "config.json").read_text())
    loads = {"nemo": (nemo, None), "seed": (seed, config), "converted": (converted, None)}
    for name, (src, preset) in loads.items():
        model = AudioCodecModel.from_pretrained(src, preset=preset)
        tokens, tokens_len = model.encode(torch.from_numpy(audio)[None])
        decoded, _ = model.decode(tokens, tokens_len)
        np.save(out / f"{name}_tokens.npy", tokens.numpy())
        np.save(out / f"{name}_decoded.npy", decoded.numpy())
    (out / "facts.json").write_text(json.dumps(facts))
""")


@pytest.fixture(scope="module")
def wheel_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(ROOT / name, src / name)
    # the checkout's venv builds it (setuptools is there): no build-time download
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", work / "dist", src], cwd=work)
    wheels = list((work / "dist").glob("nanocodec-*.whl"))
    assert len(wheels) == 1, wheels

    venv = work / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=work)
    install = pip(venv, "install", "-q", "--no-compile")  # no .pyc for torch's thousands of files: -40 s
    try:
        run([*install, TORCH], cwd=work, timeout=900)
    except AssertionError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"could not install {TORCH} into a fresh venv here (no package index?)")
    assert_cpu_torch(venv)
    # the wheel and its dependencies, torch pinned on the same line: nothing may replace the CPU build
    run([*install, wheels[0], TORCH], cwd=work, timeout=900)
    assert_cpu_torch(venv)

    user = work / "user"  # a folder outside the checkout, as a pip user's
    user.mkdir()
    nemo = user / "nano0p6.nemo"
    shutil.copy(BASE_NEMO, nemo)
    seed = write_reexport(BASE_NEMO, user / "seed")  # the seed's re-export layout, with the port's config.json
    (seed / "config.json").write_text(json.dumps({"sample_rate": 22050}))
    wav = user / f"{SPEECH}.wav"
    shutil.copy(FIXTURES / "audio" / wav.name, wav)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("HF_")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", HF_HOME=str(user / "hf"), HF_HUB_OFFLINE="1",
               NANOCODEC_CACHE=str(user / "cache"), OMP_NUM_THREADS="1")
    bin_ = venv / "bin"
    out = user / "out"
    out.mkdir()
    runs = {
        "convert": run([bin_ / "nanocodec", "convert", nemo, user / "converted"], cwd=user, env=env),
        "module_help": run([bin_ / "python", "-m", "nanocodec.convert", "--help"], cwd=user, env=env),
    }
    (user / "use.py").write_text(USER_SCRIPT)
    runs["python"] = run([bin_ / "python", user / "use.py", nemo, seed, user / "converted", wav, out], cwd=user, env=env)
    runs["encode"] = run([bin_ / "nanocodec", "encode", wav, "-o", out / "cli.safetensors", "--model", nemo], cwd=user, env=env)
    runs["decode"] = run([bin_ / "nanocodec", "decode", out / "cli.safetensors", "-o", out / "cli.wav"], cwd=user, env=env)
    print("wheel test steps (s):", TIMES)
    return {"venv": venv, "user": user, "out": out, "runs": runs}


def test_wheel_installs_cpu_torch_and_nothing_from_the_checkout(wheel_run):
    facts = json.loads((wheel_run["out"] / "facts.json").read_text())
    assert facts["nanocodec_file"].startswith(str(wheel_run["venv"])), facts
    assert "+cu" not in facts["torch"] and facts["cuda"] is None, facts
    assert facts["import_convert"] == "absent" and facts["import_parity"] == "absent", facts


def test_convert_command_from_the_wheel(wheel_run):
    folder = wheel_run["user"] / "converted"
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "README.md", "conversion_report.json"}
    assert "mapped" in wheel_run["runs"]["convert"].stdout
    assert "SRC" in wheel_run["runs"]["module_help"].stdout


@pytest.mark.parametrize("name", ["nemo", "seed", "converted"])
def test_from_pretrained_in_the_wheel_matches_nemo(wheel_run, name):
    """contracts §5 against NeMo's recording: tokens identical but for FSQ boundary flips; decoded audio of
    the same tokens within 1e-5 of NeMo's."""
    ref = load_file(str(REFS / f"{SPEECH}.safetensors"))
    tokens = np.load(wheel_run["out"] / f"{name}_tokens.npy")
    report = compare_tokens(tokens, ref["tokens"], ref["prerounding"], ref["tokens_len"])
    assert report.ok, report.to_dict()
    if report.matched == report.tokens:  # NeMo decoded its own tokens: comparable when ours are the same
        decoded = np.load(wheel_run["out"] / f"{name}_decoded.npy").reshape(ref["decoded"].shape)
        assert max_abs_error(decoded, ref["decoded"]) <= AUDIO_MAX_ABS_TOL


def test_cli_round_trip_in_the_wheel_matches_nemo(wheel_run):
    from nanocodec import token_files

    tf = token_files.read(wheel_run["out"] / "cli.safetensors")
    (key,) = tf.tokens
    ref = load_file(str(REFS / f"{SPEECH}.safetensors"))
    report = compare_tokens(tf.tokens[key].numpy()[None], ref["tokens"], ref["prerounding"], ref["tokens_len"])
    assert report.ok, report.to_dict()
    import soundfile as sf

    audio, rate = sf.read(wheel_run["out"] / "cli.wav", dtype="float32")
    assert rate == 22050 and len(audio) == len(sf.read(FIXTURES / "audio" / f"{SPEECH}.wav")[0])
    # the .nemo was converted once, into the cache the environment names, and reused by decode
    assert len(list((wheel_run["user"] / "cache").iterdir())) == 2  # the .nemo's; the seed folder's
