"""Benchmark worker: one codec implementation, inside its own Python environment.

    <env python> benchmarks/worker.py --impl ours|nemo|port --weights PATH [--opts JSON]

Runs with the standard library and torch only (plus the implementation's own package), so the same
file serves our venv, the NeMo oracle venv and the nanocodec-torch venv. It speaks JSON lines with
the driver (benchmarks/harness.py): one request on stdin, one reply on the protocol pipe (the process's
original stdout; whatever the libraries print goes to stderr).

Process model (one "zygote" per implementation, one forked child per (implementation, case)):
  - the zygote loads the model ONCE with one thread and never computes (no OpenMP team exists in it,
    so forking it is safe), then waits for requests;
  - `fork` makes a child that owns the case: it resets the kernel's RSS high-water mark
    (/proc/self/clear_refs = 5), sets the thread count, and serves `rt` requests (each times itself
    with time.perf_counter) until `end`, which replies with the child's peak RSS (VmHWM) and exits.
    Its peak is therefore what a fresh process that loaded the model and ran only this case used.
  - while a child lives the zygote only waits for it; the driver talks to one process at a time.
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import sys
import time
import traceback

PROTO = None  # the protocol pipe (original stdout)


def send(obj) -> None:
    PROTO.write(json.dumps(obj) + "\n")
    PROTO.flush()


def recv():
    """One request line from fd 0, read unbuffered: the driver sends the next request only after the
    reply to this one, and a forked child must not inherit read-ahead from its parent."""
    buf = bytearray()
    while True:
        c = os.read(0, 1)
        if not c:
            return None
        if c == b"\n":
            return json.loads(buf.decode())
        buf += c


def proc_status() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0]) / 1024.0  # MiB
    return out


def map_parent_resident_pages() -> int:
    """Map again, in this forked child, every file-backed page its parent has resident.

    fork() copies the page tables of anonymous memory but not of file mappings (shared libraries,
    mmapped weights): the child would start with a smaller RSS than the loaded parent and count only
    the library pages it happens to touch. Reading one byte of each page the parent has present
    (/proc/<parent>/pagemap, bit 63) makes the child's resident set start equal to the parent's, so
    its high-water mark is that of a process that loaded the model and then ran only this case."""
    import ctypes

    page = os.sysconf("SC_PAGE_SIZE")
    parent = os.getppid()
    touched = 0
    with open(f"/proc/{parent}/maps") as f:
        maps = f.read().splitlines()
    with open(f"/proc/{parent}/pagemap", "rb") as pm:
        for line in maps:
            parts = line.split(maxsplit=5)
            if len(parts) < 6 or "r" not in parts[1]:
                continue
            path = parts[5].strip()
            if not path.startswith("/") or path.startswith(("/dev/", "/proc/", "/sys/")):
                continue
            start, end = (int(x, 16) for x in parts[0].split("-"))
            n = (end - start) // page
            pm.seek(start // page * 8)
            entries = memoryview(pm.read(n * 8)).cast("Q")
            for i, e in enumerate(entries):
                if e >> 63:
                    ctypes.string_at(start + i * page, 1)
                    touched += 1
    return touched


def reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------
# implementations: load(), encode(audio[B,T] f32, lens) -> (tokens, tokens_len), decode(...) -> audio
# ----------------------------------------------------------------------------------------------
class Ours:
    name = "ours"

    def __init__(self, weights: str, opts: dict):
        import torch
        from nanocodec import AudioCodecModel

        self.opts = dict(opts)
        dtype = getattr(torch, self.opts.get("dtype", "float32"))
        load_kw = dict(self.opts.get("load_kwargs", {}))
        self.model = AudioCodecModel.from_pretrained(weights, dtype=dtype, **load_kw)
        self.enc_kw = dict(self.opts.get("encode_kwargs", {}))
        self.dec_kw = dict(self.opts.get("decode_kwargs", {}))
        self.notes = []
        if "chunk_seconds" in self.opts:  # null: pass chunk_seconds=None explicitly (no chunking)
            chunk = self.opts["chunk_seconds"]
            self._chunk(None if chunk is None else float(chunk))

    def _chunk(self, seconds: float | None) -> None:
        """Map a chunk length in seconds onto whatever chunking keyword nanocodec offers."""
        m = self.model
        spf, sr = m.samples_per_frame, m.sample_rate
        frames = None if seconds is None else max(1, round(seconds * sr / spf))
        enc = inspect.signature(m.encode).parameters
        dec = inspect.signature(m.decode).parameters
        found = False
        for params, kw in ((enc, self.enc_kw), (dec, self.dec_kw)):
            if "chunk_seconds" in params:
                kw["chunk_seconds"] = seconds
            elif "chunk_frames" in params:
                kw["chunk_frames"] = frames
            elif "chunk_samples" in params:
                kw["chunk_samples"] = None if frames is None else frames * spf
            else:
                continue
            found = True
        if not found:
            self.notes.append(f"chunk_seconds={seconds}: nanocodec's encode/decode take no chunking keyword; ignored")
        else:
            self.notes.append(f"chunking: encode {self.enc_kw} decode {self.dec_kw}")

    def encode(self, audio, lens):
        return self.model.encode(audio, lens, **self.enc_kw)

    def decode(self, tokens, tokens_len):
        return self.model.decode(tokens, tokens_len, **self.dec_kw)

    def info(self) -> dict:
        import nanocodec
        from nanocodec.backends import accuracy_gate

        # the backend decided each conv's layout at load (the accuracy gate's one-time measurement,
        # ~1-2 s at full size, is in the load time), before the children that time calls fork
        return {"package": f"nanocodec {nanocodec.__version__} (this checkout)", "dtype": str(self.model.dtype),
                "params": self.model.num_parameters()["total"], "notes": self.notes, "backend": self.model.backend,
                "conv_paths": self.model.conv_paths, "accuracy_gate": accuracy_gate.summary()}


class Nemo:
    name = "nemo"

    def __init__(self, weights: str, opts: dict):
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        os.environ.setdefault("HYDRA_FULL_ERROR", "1")
        from nemo.collections.tts.models import AudioCodecModel
        from nemo.utils import logging as nlog

        nlog.setLevel(logging.ERROR)
        self.model = AudioCodecModel.restore_from(weights, map_location="cpu").eval()

    def encode(self, audio, lens):
        return self.model.encode(audio=audio, audio_len=lens)

    def decode(self, tokens, tokens_len):
        return self.model.decode(tokens=tokens, tokens_len=tokens_len)

    def info(self) -> dict:
        import nemo

        return {"package": f"nemo-toolkit {nemo.__version__}", "dtype": "torch.float32",
                "params": sum(p.numel() for n, p in self.model.named_parameters()
                              if n.startswith(("audio_encoder.", "audio_decoder.")))}


class Port:
    name = "port"

    def __init__(self, weights: str, opts: dict):
        # nanocodec-torch's own loader: a local safetensors file with NeMo's key names (weight-norm
        # g/v folded by the package). Its from_pretrained treats any path containing '/' as a hub id,
        # so the model is built and loaded the way from_pretrained does it for a local file.
        from nanocodec_torch.models.audio_codec import AudioCodecModel
        from nanocodec_torch.utils.safetensors_loader import load_safetensors_weights

        self.model = AudioCodecModel(sample_rate=22050)
        load_safetensors_weights(self.model, weights, device="cpu", verbose=False)
        self.model = self.model.to("cpu").eval()

    def encode(self, audio, lens):
        return self.model.encode(audio, lens)

    def decode(self, tokens, tokens_len):
        return self.model.decode(tokens, tokens_len)

    def info(self) -> dict:
        from importlib.metadata import version

        return {"package": f"nanocodec-torch {version('nanocodec-torch')}", "dtype": "torch.float32",
                "params": sum(p.numel() for p in self.model.parameters())}


IMPLS = {"ours": Ours, "nemo": Nemo, "port": Port}


# ----------------------------------------------------------------------------------------------
# the child: one case
# ----------------------------------------------------------------------------------------------
def load_input(path: str, batch: int, samples: int):
    import torch

    x = torch.from_file(path, shared=False, size=batch * samples, dtype=torch.float32)
    return x.view(batch, samples).contiguous()


def roundtrip(impl, audio, lens):
    """encode then decode (what every implementation's forward is), timed in two halves."""
    import torch

    with torch.inference_mode():
        t0 = time.perf_counter()
        tokens, tokens_len = impl.encode(audio, lens)
        t1 = time.perf_counter()
        decoded, _ = impl.decode(tokens, tokens_len)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1, t2 - t0, tokens, decoded


def save_outputs(prefix: str, tokens, decoded) -> dict:
    import torch

    tok = tokens.to(torch.int32).contiguous()
    dec = decoded.float().reshape(decoded.shape[0], -1).contiguous()
    tok.numpy().tofile(prefix + ".tokens.i32")
    dec.numpy().tofile(prefix + ".audio.f32")
    return {"tokens_shape": list(tok.shape), "audio_shape": list(dec.shape),
            "tokens_sha1": hashlib.sha1(tok.numpy().tobytes()).hexdigest()[:12]}


def conv_peak(layers: list, reps: int) -> list:
    """GFLOP/s of single conv layers of the model's shapes (the CPU's measured peak for this work)."""
    import torch
    import torch.nn.functional as F

    out = []
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for spec in layers:
            c_in, c_out, k, dil, length = spec["c_in"], spec["c_out"], spec["kernel"], spec.get("dilation", 1), spec["length"]
            x = torch.randn(1, c_in, length + dil * (k - 1), generator=g)
            w = torch.randn(c_out, c_in, k, generator=g) * (1.0 / (c_in * k) ** 0.5)
            b = torch.zeros(c_out)
            for _ in range(2):
                F.conv1d(x, w, b, dilation=dil)
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                F.conv1d(x, w, b, dilation=dil)
                times.append(time.perf_counter() - t)
            flops = 2.0 * c_in * c_out * k * length
            out.append({**spec, "flop": flops, "times": times})
    return out


def count_flops(impl, frames_list: list, spf: int) -> list:
    """Convolution FLOPs of encode and decode (2 per multiply-add), counted at the aten level from the
    shapes of every convolution the implementation runs (torch.utils.flop_counter's formula)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import conv_flop_count

    aten = torch.ops.aten
    # (op, is transposed): under no_grad the functional convs reach the mode as aten.convolution
    convs = {aten.convolution.default: None, aten._convolution.default: None, aten.conv1d.default: False,
             aten.conv_transpose1d.default: True}

    class ConvCounter(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.flops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func in convs:
                x, w = args[0], args[1]
                transposed = args[6] if convs[func] is None else convs[func]
                self.flops += conv_flop_count(list(x.shape), list(w.shape), list(out.shape), transposed=transposed)
            return out

    res = []
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for frames in frames_list:
            audio = (torch.rand(1, frames * spf, generator=g) - 0.5) * 0.2
            lens = torch.tensor([frames * spf])
            with ConvCounter() as fc:
                tokens, tokens_len = impl.encode(audio, lens)
            enc = fc.flops
            with ConvCounter() as fc:
                impl.decode(tokens, tokens_len)
            res.append({"frames": frames, "encode": enc, "decode": fc.flops})
    return res


def child_loop(impl, threads: int) -> None:
    import torch

    before = proc_status().get("VmRSS")
    try:
        mapped = map_parent_resident_pages()
    except Exception as e:  # the figure is then the child's own (smaller) resident set
        mapped = f"failed: {type(e).__name__}: {e}"
    hwm_ok = reset_hwm()
    torch.set_num_threads(threads)
    start = proc_status()
    send({"ok": True, "pid": os.getpid(), "rss_start_mib": start.get("VmRSS"), "rss_at_fork_mib": before,
          "parent_pages_mapped": mapped, "hwm_reset": hwm_ok,
          "threads": torch.get_num_threads()})
    inputs = {}
    while True:
        req = recv()
        if req is None:
            os._exit(1)
        try:
            cmd = req["cmd"]
            if cmd == "rt":
                key = (req["input"], req["batch"], req["samples"])
                if key not in inputs:
                    inputs[key] = load_input(*key)
                audio = inputs[key]
                lens = torch.full((audio.shape[0],), audio.shape[1], dtype=torch.int64)
                enc, dec, rt, tokens, decoded = roundtrip(impl, audio, lens)
                reply = {"ok": True, "encode": enc, "decode": dec, "roundtrip": rt,
                         "frames": int(tokens.shape[-1]), "out_samples": int(decoded.shape[-1])}
                if req.get("save"):
                    reply.update(save_outputs(req["save"], tokens, decoded))
                del tokens, decoded
                send(reply)
            elif cmd == "conv_peak":
                send({"ok": True, "layers": conv_peak(req["layers"], req.get("reps", 5))})
            elif cmd == "flops":
                send({"ok": True, "counts": count_flops(impl, req["frames"], req["spf"])})
            elif cmd == "end":
                st = proc_status()
                import resource

                send({"ok": True, "peak_rss_mib": st.get("VmHWM"), "rss_end_mib": st.get("VmRSS"),
                      "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0})
                PROTO.flush()
                os._exit(0)
            else:
                send({"ok": False, "error": f"unknown command {cmd!r}"})
        except Exception as e:  # report, keep serving: the driver decides
            send({"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]})


def main() -> None:
    global PROTO
    ap = argparse.ArgumentParser()
    ap.add_argument("--impl", required=True, choices=sorted(IMPLS))
    ap.add_argument("--weights", required=True)
    ap.add_argument("--opts", default="{}")
    args = ap.parse_args()
    PROTO = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # library prints (NeMo logs, loaders) go to stderr, never into the protocol
    sys.stdout = sys.stderr
    opts = json.loads(args.opts)

    import torch

    torch.set_num_threads(1)  # the zygote computes nothing in parallel: forking it stays safe
    t0 = time.perf_counter()
    try:
        impl = IMPLS[args.impl](args.weights, opts)
        info = impl.info()
    except Exception as e:
        send({"ok": False, "error": f"load failed: {type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]})
        return
    load_s = time.perf_counter() - t0
    import platform

    info.update({"python": platform.python_version(), "torch": torch.__version__, "load_s": load_s,
                 "rss_after_load_mib": proc_status().get("VmRSS"), "hwm_after_load_mib": proc_status().get("VmHWM"),
                 "executable": sys.executable})
    send({"ok": True, "ready": True, "info": info})
    while True:
        req = recv()
        if req is None or req["cmd"] == "quit":
            return
        if req["cmd"] != "fork":
            send({"ok": False, "error": f"zygote: unknown command {req['cmd']!r}"})
            continue
        PROTO.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                child_loop(impl, int(req["threads"]))
            finally:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        send({"ok": True, "child_exit": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    main()
