"""Re-run NeMo on the COMMITTED `.nemo` fixtures (and the variants derived from them) and compare
with the committed references under the contracts §5 rules. Prints a table; exit 1 on failure.

Runs inside the oracle environment: `make check-fixtures`.
"""
from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nemo_oracle as O  # noqa: E402
from derive import DERIVED_BASE, derived_name, derived_variants  # noqa: E402

from parity.compare import audio_ok, compare_tokens, latent_rel_error, LATENT_REL_TOL  # noqa: E402


def sha256(p) -> str:
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def load_ref(rel):
    from safetensors.torch import load_file

    return load_file(str(O.FIXTURES / rel))


def compare(ours: dict, ref: dict, batch: bool) -> list[tuple]:
    """Rows (what, ok, detail) for one reference file."""
    rows = []
    pairs = [("", "tokens", "prerounding", "latents", "decoded", "tokens_len", "decoded_len")]
    if batch:
        pairs.append(("item_", "item_tokens", "item_prerounding", "item_latents", "item_decoded", None, None))
    for tag, tk, pk, lk, dk, tl, dl in pairs:
        if tl:
            ok = torch.equal(ours[tl], ref[tl]) and torch.equal(ours[dl], ref[dl])
            rows.append((tag + "lengths", ok, f"{ref[tl].tolist()}"))
        lens = ref["tokens_len"].numpy() if not tag else None
        if tag:  # item-by-item: frames per item
            spf = ours["decoded"].shape[-1] // max(ours["tokens"].shape[-1], 1)
            lens = ((ref["audio_len"] + spf - 1) // spf).numpy()
        rep = compare_tokens(ours[tk].numpy(), ref[tk].numpy(), ref[pk].numpy(), lens)
        rows.append((tag + "tokens", rep.ok,
                     f"{rep.matched}/{rep.tokens} equal, explained {rep.explained}/{rep.allowed_explained}, "
                     f"unexplained {rep.unexplained}"))
        e = latent_rel_error(ours[lk].numpy(), ref[lk].numpy()) if ours[lk].shape == ref[lk].shape else float("inf")
        rows.append((tag + "latents", e <= LATENT_REL_TOL, f"rel {e:.2e}"))
        if ours[dk].shape != ref[dk].shape:
            rows.append((tag + "decoded", False, f"shape {tuple(ours[dk].shape)} vs {tuple(ref[dk].shape)}"))
        else:
            ok, err, snr = audio_ok(ours[dk].numpy(), ref[dk].numpy())
            rows.append((tag + "decoded", ok, f"max {err:.2e}, snr {snr:.1f} dB"))
    if batch:
        rows.append(("audio", torch.equal(ours["audio"], ref["audio"]), "batch input tensor"))
    return rows


def add_crashes(add, name, model, manifest):
    """The inputs NeMo raised on when the fixtures were built: it still raises the same."""
    for c in manifest["crashes"].get(name, []):
        try:
            O.run_single(model, O.load_audio(c["input"]))
            raised = None
        except Exception as e:  # noqa: BLE001
            raised = type(e).__name__
        add(name, c["input"], [("crash", raised == c["raised"], f"NeMo raised {raised}")])


def main() -> int:
    O.quiet_nemo()
    torch.set_num_threads(1)
    t0 = time.time()
    manifest = json.loads(O.MANIFEST.read_text())
    table = []  # (model, ref, what, ok, detail)

    def add(model, ref, rows):
        for what, ok, detail in rows:
            table.append((model, ref, what, bool(ok), detail))

    # files against the manifest
    for name, inp in manifest["inputs"].items():
        add("-", inp["file"], [("sha256", sha256(O.FIXTURES / inp["file"]) == inp["sha256"], "")])
    for name, m in manifest["models"].items():
        add(name, m["file"], [("sha256", sha256(O.FIXTURES / m["file"]) == m["sha256"], "")])
    for rel, h in manifest["refs"].items():
        add("-", rel, [("sha256", sha256(O.FIXTURES / rel) == h, "")])

    models = {}
    for name, m in manifest["models"].items():
        path = O.FIXTURES / m["file"]
        model = O.restore(path)
        O.assert_state_matches(model, path)
        models[name] = (model, path)
        for inp in m["inputs"]:
            rel = f"refs/{name}/{inp}.safetensors"
            add(name, inp, compare(O.run_single(model, O.load_audio(inp)), load_ref(rel), False))
        for b in m["batches"]:
            rel = f"refs/{name}/{b}.safetensors"
            ref = load_ref(rel)
            add(name, b, compare(O.run_batch(model, ref["audio"], ref["audio_len"]), ref, True))
        add_crashes(add, name, model, manifest)
        print(f"checked {name} ({time.time() - t0:.0f} s)", flush=True)

    # derived variants: rebuilt from the committed base
    base, base_path = models[DERIVED_BASE]
    probe = ["speech_4s", "len_1765", "len_1"]
    base_out = {p: O.run_single(base, O.load_audio(p)) for p in probe}
    with tempfile.TemporaryDirectory() as td:
        for suffix, fn in derived_variants().items():
            name = derived_name(suffix)
            p = fn(base_path, Path(td) / f"{name}.nemo")
            p2 = fn(base_path, Path(td) / f"{name}.again.nemo")
            add(name, "derive", [("deterministic", sha256(p) == sha256(p2), "derived twice")])
            model = O.restore(p)
            O.assert_state_matches(model, p)
            if suffix == "reflect":
                for inp in manifest["derived"][name]["inputs"]:
                    rel = f"refs/{name}/{inp}.safetensors"
                    add(name, inp, compare(O.run_single(model, O.load_audio(inp)), load_ref(rel), False))
                add_crashes(add, name, model, manifest)
                continue
            for inp, ref in base_out.items():
                r = O.run_single(model, O.load_audio(inp))
                same = all(torch.equal(r[k], ref[k]) for k in ref)
                add(name, inp, [("identical_to_base", same, "")])
        print(f"checked derived variants ({time.time() - t0:.0f} s)", flush=True)

    w = [max(len(str(r[i])) for r in table) for i in range(3)]
    fails = 0
    for model, ref, what, ok, detail in table:
        if what == "sha256" and ok:
            continue
        fails += not ok
        print(f"{model:<{w[0]}}  {ref:<{w[1]}}  {what:<{w[2]}}  {'ok ' if ok else 'FAIL'}  {detail}")
    n_sha = sum(1 for r in table if r[2] == "sha256")
    print(f"{n_sha} files checked against manifest sha256 ({sum(1 for r in table if r[2] == 'sha256' and not r[3])} mismatches)")
    print(f"{len(table)} checks, {fails} failed, {time.time() - t0:.1f} s")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
