"""Benchmark worker: one codec implementation in its own environment (standard library and torch only).

    <env python> benchmarks/worker.py ours|nemo|port WEIGHTS OPTIONS_JSON   (started by harness.py)

JSON lines with harness.py: requests on stdin, replies on the original stdout (library prints go to stderr).
This process (the "zygote") loads the model with one thread and never computes, so forking it is safe; each
`fork` makes a child that owns one case: it maps the parent's resident file pages again, resets the RSS
high-water mark and serves `rt` (one round trip, timed with perf_counter) until `end`, which replies with its
peak RSS, or until end of input. A request's `limit_s` is an alarm in the child: a hung call kills it, and the
zygote, which only waits for its child (one process computes at a time), reports the exit.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import sys
import time
import traceback

PROTO = None  # the protocol pipe (the original stdout)


def send(obj) -> None:
    PROTO.write(json.dumps(obj) + "\n")
    PROTO.flush()


def recv():
    """One request line from fd 0, unbuffered: a forked child must not inherit its parent's read-ahead."""
    buf = bytearray()
    while (c := os.read(0, 1)) != b"\n":
        if not c:
            return None
        buf += c
    return json.loads(buf.decode())


def proc_status() -> dict:
    with open("/proc/self/status") as f:
        return {k: int(v.split()[0]) / 1024.0 for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}


def map_parent_resident_pages() -> int:
    """Touch, in this forked child, every file-backed page its parent has resident (/proc/<ppid>/pagemap bit 63).
    fork() copies the page tables of anonymous memory but not of file mappings (libraries, mmapped weights), so
    the child would otherwise start below the loaded parent and count only the library pages it happens to use."""
    import ctypes

    page, parent, touched = os.sysconf("SC_PAGE_SIZE"), os.getppid(), 0
    with open(f"/proc/{parent}/maps") as f, open(f"/proc/{parent}/pagemap", "rb") as pm:
        for parts in (line.split(maxsplit=5) for line in f.read().splitlines()):
            path = parts[5].strip() if len(parts) == 6 else ""
            if "r" not in parts[1] or not path.startswith("/") or path.startswith(("/dev/", "/proc/", "/sys/")):
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            pm.seek(start // page * 8)
            for i, entry in enumerate(memoryview(pm.read((end - start) // page * 8)).cast("Q")):
                if entry >> 63:
                    ctypes.string_at(start + i * page, 1)
                    touched += 1
    return touched


# -- implementations -----------------------------------------------------------------------------------------------
class Impl:
    """encode(audio [B,T] f32, lens) -> (tokens, tokens_len), decode(...) -> (audio, len): the model's own calls."""
    enc_kw = dec_kw = {}  # noqa: RUF012  read only; ours sets its own
    scope = staticmethod(contextlib.nullcontext)  # numeric settings around every timed call; ours sets its own
    package = "?"

    def info(self) -> dict:
        return {"package": self.package, "dtype": str(next(self.model.parameters()).dtype)}

    def encode(self, audio, lens):
        return self.model.encode(audio, lens, **self.enc_kw)

    def decode(self, tokens, tokens_len):
        return self.model.decode(tokens, tokens_len, **self.dec_kw)


class Ours(Impl):
    def __init__(self, weights: str, opts: dict):
        import torch

        import nanocodec
        from nanocodec import AudioCodecModel

        self.package = f"nanocodec {nanocodec.__version__} (this checkout)"
        self.dtype = getattr(torch, opts.get("dtype", "float32"))
        self.model = AudioCodecModel.from_pretrained(weights, dtype=self.dtype, **opts.get("load_kwargs", {}))
        self.enc_kw, self.dec_kw = opts.get("encode_kwargs", {}), opts.get("decode_kwargs", {})

    def scope(self):
        """The run's numeric settings (contracts §10: nanocodec.precision), scoped around every timed call."""
        from nanocodec.precision import precision_scope

        return precision_scope("cpu", self.dtype, backend=self.model.backend)

    def info(self) -> dict:
        from nanocodec.backends import accuracy_gate

        # the backend decided each conv's layout at load (the accuracy gate's one-time measurement is in the
        # load time), before the children that time calls fork; they run with the driver's OMP_NUM_THREADS
        with self.scope() as policy:
            settings = policy.record(threads=int(os.environ.get("OMP_NUM_THREADS", "1")))
        return {"package": self.package, "dtype": str(self.model.dtype), "backend": self.model.backend,
                "conv_paths": self.model.conv_paths, "accuracy_gate": accuracy_gate.summary(), "precision": settings}


class Nemo(Impl):
    def __init__(self, weights: str, opts: dict):
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        import nemo
        from nemo.collections.tts.models import AudioCodecModel
        from nemo.utils import logging as nemo_logging

        nemo_logging.setLevel(logging.ERROR)
        self.model = AudioCodecModel.restore_from(weights, map_location="cpu").eval()
        self.package = f"nemo-toolkit {nemo.__version__}"

    def encode(self, audio, lens):
        return self.model.encode(audio=audio, audio_len=lens)

    def decode(self, tokens, tokens_len):
        return self.model.decode(tokens=tokens, tokens_len=tokens_len)


class Port(Impl):
    def __init__(self, weights: str, opts: dict):
        # nanocodec-torch's own loader of a local safetensors file with NeMo's key names (it folds weight norm);
        # its from_pretrained takes any path with a '/' for a hub id, so the model is built as it builds it
        from importlib.metadata import version

        from nanocodec_torch.models.audio_codec import AudioCodecModel
        from nanocodec_torch.utils.safetensors_loader import load_safetensors_weights

        self.model = AudioCodecModel(sample_rate=22050)
        load_safetensors_weights(self.model, weights, device="cpu", verbose=False)
        self.model = self.model.to("cpu").eval()
        self.package = f"nanocodec-torch {version('nanocodec-torch')}"


IMPLS = {"ours": Ours, "nemo": Nemo, "port": Port}


# -- the child: one case -------------------------------------------------------------------------------------------
def roundtrip(impl, req: dict, inputs: dict) -> dict:
    """encode then decode (every implementation's forward), timed in two halves; a request with `save` (a case's
    first timed round) keeps the outputs for the driver's agreement check."""
    import torch

    key = (req["input"], req["batch"], req["samples"])
    if key not in inputs:
        inputs[key] = torch.from_file(key[0], shared=False, size=key[1] * key[2], dtype=torch.float32).view(key[1], key[2])
    audio = inputs[key]
    lens = torch.full((audio.shape[0],), audio.shape[1], dtype=torch.int64)
    with torch.inference_mode(), impl.scope():
        t0 = time.perf_counter()
        tokens, tokens_len = impl.encode(audio, lens)
        t1 = time.perf_counter()
        decoded = impl.decode(tokens, tokens_len)[0]
        t2 = time.perf_counter()
    reply = {"ok": True, "encode": t1 - t0, "decode": t2 - t1, "roundtrip": t2 - t0, "frames": int(tokens.shape[-1])}
    if req.get("save"):
        tokens.to(torch.int32).contiguous().numpy().tofile(req["save"] + ".tokens.i32")
        decoded.float().reshape(decoded.shape[0], -1).contiguous().numpy().tofile(req["save"] + ".audio.f32")
    return reply


def child_loop(impl, threads: int) -> None:
    import torch

    signal.alarm(300)  # mapping the parent's pages takes seconds; a hang ends this child, and the zygote says so
    before = proc_status().get("VmRSS")
    try:
        mapped = map_parent_resident_pages()
    except Exception as e:  # the figure is then the child's own (smaller) resident set
        mapped = f"failed: {type(e).__name__}: {e}"
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    torch.set_num_threads(threads)
    signal.alarm(0)
    send({"ok": True, "pid": os.getpid(), "rss_at_fork_mib": before, "rss_start_mib": proc_status().get("VmRSS"),
          "parent_pages_mapped": mapped, "threads": torch.get_num_threads()})
    inputs: dict = {}
    while (req := recv()) is not None:
        try:
            if req["cmd"] == "rt":
                signal.alarm(int(req.get("limit_s", 0)))  # a hung call: SIGALRM's default action ends this process
                try:
                    send(roundtrip(impl, req, inputs))
                finally:
                    signal.alarm(0)
            elif req["cmd"] == "end":
                send({"ok": True, "peak_rss_mib": proc_status().get("VmHWM")})
                os._exit(0)
            else:
                send({"ok": False, "error": f"unknown command {req['cmd']!r}"})
        except Exception as e:  # report and keep serving: the driver decides
            send({"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]})
    os._exit(1)


def main() -> None:
    global PROTO
    impl_name, weights, opts = sys.argv[1:4]
    PROTO = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # library prints (NeMo's logs, loaders) go to stderr, never into the protocol
    sys.stdout = sys.stderr

    import torch

    torch.set_num_threads(1)  # the zygote computes nothing in parallel: forking it stays safe
    t0 = time.perf_counter()
    try:
        impl = IMPLS[impl_name](weights, json.loads(opts))
        info = impl.info()
    except Exception as e:
        send({"ok": False, "error": f"load failed: {type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]})
        return
    st = proc_status()
    info.update(python=platform.python_version(), torch=torch.__version__, load_s=time.perf_counter() - t0,
                rss_after_load_mib=st.get("VmRSS"), hwm_after_load_mib=st.get("VmHWM"), executable=sys.executable)
    send({"ok": True, "ready": True, "info": info})
    while (req := recv()) is not None:  # end of input: the driver is done
        if req["cmd"] != "fork":
            send({"ok": False, "error": f"zygote: unknown command {req['cmd']!r}"})
            continue
        sys.stderr.flush()
        if (pid := os.fork()) == 0:
            try:
                child_loop(impl, int(req["threads"]))
            finally:
                os._exit(1)
        send({"ok": True, "child_exit": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])})


if __name__ == "__main__":
    main()
