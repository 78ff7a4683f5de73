"""Benchmark worker: one codec implementation in its own environment (standard library and torch only).

    <env python> benchmarks/worker.py --impl ours|nemo|port --weights PATH [--opts JSON]

JSON lines with harness.py: requests on stdin, replies on the original stdout (library prints go to stderr).
This process (the "zygote") loads the model with one thread and never computes, so forking it is safe; each
`fork` makes a child that owns one case: it maps the parent's resident file pages again, resets the RSS
high-water mark, serves `rt` (one round trip, timed with perf_counter) and `flops` until `end`, which replies
with its peak RSS. While a child lives the zygote only waits for it: one process computes at a time.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
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


# ----------------------------------------------------------------------------------------------
# implementations
# ----------------------------------------------------------------------------------------------
class Impl:
    """encode(audio [B,T] f32, lens) -> (tokens, tokens_len), decode(...) -> (audio, len): the model's own calls."""
    enc_kw = dec_kw = {}  # noqa: RUF012  read only; ours sets its own

    def scope(self):  # numeric settings around every timed call
        import contextlib

        return contextlib.nullcontext()

    def encode(self, audio, lens):
        return self.model.encode(audio, lens, **self.enc_kw)

    def decode(self, tokens, tokens_len):
        return self.model.decode(tokens, tokens_len, **self.dec_kw)


class Ours(Impl):
    def __init__(self, weights: str, opts: dict):
        import torch
        from nanocodec import AudioCodecModel

        self.dtype = getattr(torch, opts.get("dtype", "float32"))
        self.model = AudioCodecModel.from_pretrained(weights, dtype=self.dtype, **opts.get("load_kwargs", {}))
        self.enc_kw, self.dec_kw = dict(opts.get("encode_kwargs", {})), dict(opts.get("decode_kwargs", {}))
        self.notes = []
        if "chunk_seconds" in opts:  # null: chunk_seconds=None (whole-input processing)
            self.enc_kw["chunk_seconds"] = self.dec_kw["chunk_seconds"] = opts["chunk_seconds"]
            self.notes.append(f"chunking: encode {self.enc_kw} decode {self.dec_kw}")

    def scope(self):
        """The run's numeric settings (contracts §10: nanocodec.precision), scoped around every timed call."""
        from nanocodec.precision import precision_scope

        return precision_scope("cpu", self.dtype, backend=self.model.backend)

    def info(self) -> dict:
        import nanocodec
        from nanocodec.backends import accuracy_gate

        # the backend decided each conv's layout at load (the accuracy gate's one-time measurement is in the
        # load time), before the children that time calls fork; they run with the driver's OMP_NUM_THREADS
        with self.scope() as policy:
            settings = policy.record(threads=int(os.environ.get("OMP_NUM_THREADS", "1")))
        return {"package": f"nanocodec {nanocodec.__version__} (this checkout)", "dtype": str(self.model.dtype),
                "params": self.model.num_parameters()["total"], "notes": self.notes, "backend": self.model.backend,
                "conv_paths": self.model.conv_paths, "accuracy_gate": accuracy_gate.summary(), "precision": settings}


class Nemo(Impl):
    def __init__(self, weights: str, opts: dict):
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        from nemo.collections.tts.models import AudioCodecModel
        from nemo.utils import logging as nemo_logging

        nemo_logging.setLevel(logging.ERROR)
        self.model = AudioCodecModel.restore_from(weights, map_location="cpu").eval()

    def encode(self, audio, lens):
        return self.model.encode(audio=audio, audio_len=lens)

    def decode(self, tokens, tokens_len):
        return self.model.decode(tokens=tokens, tokens_len=tokens_len)

    def info(self) -> dict:
        import nemo

        return {"package": f"nemo-toolkit {nemo.__version__}", "dtype": "torch.float32",
                "params": sum(p.numel() for n, p in self.model.named_parameters() if n.startswith(("audio_encoder.", "audio_decoder.")))}


class Port(Impl):
    def __init__(self, weights: str, opts: dict):
        # nanocodec-torch's own loader of a local safetensors file with NeMo's key names (it folds weight norm);
        # its from_pretrained takes any path with a '/' for a hub id, so the model is built as it builds it
        from nanocodec_torch.models.audio_codec import AudioCodecModel
        from nanocodec_torch.utils.safetensors_loader import load_safetensors_weights

        self.model = AudioCodecModel(sample_rate=22050)
        load_safetensors_weights(self.model, weights, device="cpu", verbose=False)
        self.model = self.model.to("cpu").eval()

    def info(self) -> dict:
        from importlib.metadata import version

        return {"package": f"nanocodec-torch {version('nanocodec-torch')}", "dtype": "torch.float32",
                "params": sum(p.numel() for p in self.model.parameters())}


IMPLS = {"ours": Ours, "nemo": Nemo, "port": Port}


# ----------------------------------------------------------------------------------------------
# the child: one case
# ----------------------------------------------------------------------------------------------
def roundtrip(impl, req: dict, inputs: dict) -> dict:
    """encode then decode (every implementation's forward), timed in two halves; the first call of a case
    saves its outputs for the driver's agreement check."""
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
        tok = tokens.to(torch.int32).contiguous().numpy()
        tok.tofile(req["save"] + ".tokens.i32")
        decoded.float().reshape(decoded.shape[0], -1).contiguous().numpy().tofile(req["save"] + ".audio.f32")
        reply.update(tokens_shape=list(tok.shape), audio_shape=[decoded.shape[0], decoded.shape[-1]],
                     tokens_sha1=hashlib.sha1(tok.tobytes()).hexdigest()[:12])
    return reply


def count_flops(impl, frames_list: list, spf: int) -> list:
    """FLOPs of encode and decode (2 per multiply-add) at a few lengths, counted at the aten level by
    torch.utils.flop_counter (the model's convolutions: it has no matrix products)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    out, g = [], torch.Generator().manual_seed(0)
    with torch.no_grad():
        for frames in frames_list:
            audio = (torch.rand(1, frames * spf, generator=g) - 0.5) * 0.2
            with FlopCounterMode(display=False) as enc:
                tokens, tokens_len = impl.encode(audio, torch.tensor([frames * spf]))
            with FlopCounterMode(display=False) as dec:
                impl.decode(tokens, tokens_len)
            out.append({"frames": frames, "encode": enc.get_total_flops(), "decode": dec.get_total_flops()})
    return out


def child_loop(impl, threads: int) -> None:
    import resource

    import torch

    before = proc_status().get("VmRSS")
    try:
        mapped = map_parent_resident_pages()
    except Exception as e:  # the figure is then the child's own (smaller) resident set
        mapped = f"failed: {type(e).__name__}: {e}"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        hwm_reset = True
    except OSError:
        hwm_reset = False
    torch.set_num_threads(threads)
    send({"ok": True, "pid": os.getpid(), "rss_at_fork_mib": before, "rss_start_mib": proc_status().get("VmRSS"),
          "parent_pages_mapped": mapped, "hwm_reset": hwm_reset, "threads": torch.get_num_threads()})
    inputs: dict = {}
    while (req := recv()) is not None:
        try:
            if req["cmd"] == "rt":
                send(roundtrip(impl, req, inputs))
            elif req["cmd"] == "flops":
                send({"ok": True, "counts": count_flops(impl, req["frames"], req["spf"])})
            elif req["cmd"] == "end":
                st = proc_status()
                send({"ok": True, "peak_rss_mib": st.get("VmHWM"), "rss_end_mib": st.get("VmRSS"),
                      "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0})
                os._exit(0)
            else:
                send({"ok": False, "error": f"unknown command {req['cmd']!r}"})
        except Exception as e:  # report and keep serving: the driver decides
            send({"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]})
    os._exit(1)


def main() -> None:
    global PROTO
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", required=True, choices=sorted(IMPLS))
    ap.add_argument("--weights", required=True)
    ap.add_argument("--opts", default="{}")
    args = ap.parse_args()
    PROTO = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # library prints (NeMo's logs, loaders) go to stderr, never into the protocol
    sys.stdout = sys.stderr

    import torch

    torch.set_num_threads(1)  # the zygote computes nothing in parallel: forking it stays safe
    t0 = time.perf_counter()
    try:
        impl = IMPLS[args.impl](args.weights, json.loads(args.opts))
        info = impl.info()
    except Exception as e:
        send({"ok": False, "error": f"load failed: {type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]})
        return
    st = proc_status()
    info.update(python=platform.python_version(), torch=torch.__version__, load_s=time.perf_counter() - t0,
                rss_after_load_mib=st.get("VmRSS"), hwm_after_load_mib=st.get("VmHWM"), executable=sys.executable)
    send({"ok": True, "ready": True, "info": info})
    while (req := recv()) is not None and req["cmd"] != "quit":
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
