"""Exact streaming (contracts §1, §5): concatenated steps equal offline decode / encode.

Decoder: <= 1e-5 max abs error against offline decoding of the same tokens (NeMo's recorded
tokens). Encoder: the token rule against our own offline float32 path (different conv lengths
legitimately differ by ~1e-7 in latents, which can only flip a token at a rounding boundary).
"""
import json
import random
import shutil

import pytest
import torch

from nanocodec.convert.converter import convert
from nanocodec import AudioCodecModel
from nanocodec.errors import InvalidInputError
from parity import compare, fixtures
from parity.oracle.derive import derive_reflect

# 0.6, 1.78 and 1.89 kbps (NeMo's older codecs have a non-causal decoder: tests/test_variants.py)
CAUSAL_FIXTURES = [c for c in fixtures.model_cases() if c.derive is None
                   and fixtures.manifest()["models"][c.name]["config"]["audio_decoder"]["_target_"].endswith(".CausalHiFiGANDecoder")]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("streaming")
    out = {}
    for case in CAUSAL_FIXTURES:
        convert(str(case.nemo), str(tmp / case.name))
        out[case.name] = AudioCodecModel.from_pretrained(tmp / case.name)
    base = next(c for c in CAUSAL_FIXTURES if c.name == "nano0p6_replicate")
    convert(str(derive_reflect(base.nemo, tmp / "reflect.nemo")), str(tmp / "reflect"))
    out["reflect"] = AudioCodecModel.from_pretrained(tmp / "reflect")
    shutil.copytree(tmp / base.name, tmp / "zeros")  # same weights, zero padding: a third pad mode
    cfg = json.loads((tmp / "zeros" / "config.json").read_text())
    cfg["encoder"]["pad_mode"] = "zeros"
    (tmp / "zeros" / "config.json").write_text(json.dumps(cfg))
    out["zeros"] = AudioCodecModel.from_pretrained(tmp / "zeros")
    return out


def schedule(total, chunk, seed=0):
    """Chunk boundaries: fixed size, or random sizes in [0, 2*spf] for chunk == 'random'."""
    rng = random.Random(seed)
    cuts, at = [], 0
    while at < total:
        n = rng.randint(0, 2 * 1764) if chunk == "random" else chunk
        cuts.append((at, min(total, at + n)))
        at += n
    return cuts


def stream_decode(model, tokens, sizes):
    dec = model.stream_decoder(batch_size=tokens.shape[0])
    out, at = [], 0
    for n in sizes:
        out.append(dec.step(tokens[:, :, at : at + n]))
        at += n
    return torch.cat(out, dim=-1)


@pytest.mark.parametrize("name", [c.name for c in CAUSAL_FIXTURES])
def test_stream_decoder_equals_offline(models, name):
    model = models[name]
    case = next(c for c in CAUSAL_FIXTURES if c.name == name)
    long_tokens = torch.from_numpy(fixtures.read_ref(case, "speech_4s")["tokens"]).long()
    short_tokens = long_tokens[:, :, : max(1, round(model.config.frame_rate))]  # ~1 s for chunk size 1
    rng = random.Random(1)
    for tokens, sizes_list in (
        (short_tokens, [[1] * short_tokens.shape[-1]]),
        (long_tokens, [[c] * -(-long_tokens.shape[-1] // c) for c in (2, 3, 4, 7, 16)]
         + [[rng.randint(1, 9) for _ in range(long_tokens.shape[-1])]]),
    ):
        for batch in (1, 3):
            # batch 3: different token streams per item (shifted), all in lockstep
            toks = torch.cat([tokens.roll(i, dims=-1) for i in range(batch)])
            offline, _ = model.decode(toks)
            for sizes in sizes_list:
                f = toks.shape[-1]
                sizes = [n for n in sizes if n > 0]
                total = 0
                trimmed = []
                for n in sizes:  # cut the schedule to exactly f frames
                    if total >= f:
                        break
                    trimmed.append(min(n, f - total))
                    total += trimmed[-1]
                streamed = stream_decode(model, toks, trimmed)
                assert streamed.shape == offline.shape
                err = compare.max_abs_error(streamed.numpy(), offline.numpy())
                assert err <= compare.AUDIO_MAX_ABS_TOL, (name, batch, trimmed[:5], err)


def test_stream_decoder_reset_and_batch_check(models):
    model = models["nano0p6_replicate"]
    tokens = torch.randint(0, model.codebook_size, (1, model.num_codebooks, 5))
    dec = model.stream_decoder()
    first = dec.step(tokens)
    dec.reset()
    assert torch.equal(dec.step(tokens), first)
    with pytest.raises(InvalidInputError, match="batch_size=1"):
        dec.step(tokens.repeat(2, 1, 1))


def stream_encode(model, audio, chunk, seed=0):
    enc = model.stream_encoder(batch_size=audio.shape[0])
    outs = [enc.step(audio[:, a:b]) for a, b in schedule(audio.shape[-1], chunk, seed)]
    outs.append(enc.flush())
    assert all(o.dtype == torch.int32 for o in outs)
    return torch.cat(outs, dim=-1)


def check_tokens(model, audio, streamed):
    latents, frames = model.encode_latents(audio)
    offline = model.quantizer.encode(latents, frames)
    pre = model.quantizer.prerounding(latents).flatten(1, 2)
    report = compare.compare_tokens(streamed.numpy(), offline.numpy(), pre.numpy())
    assert report.ok, report.mismatches[:5]


@pytest.mark.parametrize("name", ["nano0p6_replicate", "reflect", "zeros", "nano1p89", "nano1p78"])
@pytest.mark.parametrize("chunk", [100, 1764, 5000, "random"])
def test_stream_encoder_equals_offline(models, name, chunk):
    model = models[name]
    speech = torch.from_numpy(fixtures.read_input("speech_4s"))[: 2 * 22050]
    audio = torch.stack([speech, speech.roll(777)])  # batch 2 in lockstep
    check_tokens(model, audio, stream_encode(model, audio, chunk, seed=len(name)))


@pytest.mark.parametrize("name", ["nano0p6_replicate", "reflect", "zeros"])
def test_stream_encoder_sample_by_sample(models, name):
    model = models[name]
    n = 4 * model.samples_per_frame if name == "reflect" else 2205  # reflect needs 4 frames (NeMo too)
    audio = torch.from_numpy(fixtures.read_input("speech_4s"))[None, 11025 : 11025 + n]
    check_tokens(model, audio, stream_encode(model, audio, 1))


@pytest.mark.parametrize("length", [1, 1763, 1764, 1765])
def test_stream_encoder_short_inputs(models, length):
    model = models["nano0p6_replicate"]
    audio = torch.from_numpy(fixtures.read_input("speech_4s"))[None, 20000 : 20000 + length]
    for chunk in (7, 1000):
        check_tokens(model, audio, stream_encode(model, audio, chunk))


def test_stream_encoder_lookahead_is_exact(models):
    """Frame k's tokens appear once (k+1)*spf + lookahead_samples samples are in, not one earlier."""
    model = models["nano0p6_replicate"]
    spf = model.samples_per_frame
    enc = model.stream_encoder()
    look = enc.lookahead_samples
    assert look > 0 and enc.lookahead_ms == pytest.approx(1000 * look / model.sample_rate)
    audio = torch.from_numpy(fixtures.read_input("speech_4s"))[None]
    need = spf + look  # samples needed for frame 0
    assert enc.step(audio[:, : need - 1]).shape[-1] == 0
    assert enc.step(audio[:, need - 1 : need]).shape[-1] == 1
    assert enc.step(audio[:, need : need + spf - 1]).shape[-1] == 0
    assert enc.step(audio[:, need + spf - 1 : need + spf]).shape[-1] == 1


def test_stream_encoder_empty_steps_and_reset(models):
    model = models["nano0p6_replicate"]
    enc = model.stream_encoder()
    assert enc.step(torch.zeros(1, 0)).shape == (1, model.num_codebooks, 0)
    assert enc.flush().shape == (1, model.num_codebooks, 0)
    with pytest.raises(InvalidInputError):
        enc.step(torch.zeros(2, 10))


# ---- the named, functional decoder state (one topology: the modules' own streaming code) -------
def test_decoder_state_is_named_after_its_modules_and_functional(models):
    model = models["nano0p6_replicate"]
    dec = model.decoder
    spec = dec.state_spec()
    stateful = {name for name, m in dec.named_modules()
                if type(m).__name__ in ("CausalConv1d", "FastCausalConv1d") and m.context
                or type(m).__name__ == "CausalConvTranspose1d"}
    assert set(spec) == stateful and "pre_conv" in spec and "up_convs.0" in spec
    state = dec.init_state(2)
    assert all(state[n].shape == (2, *spec[n]) and not state[n].any() for n in spec)
    tokens = torch.from_numpy(fixtures.read_ref(next(c for c in CAUSAL_FIXTURES if c.name == "nano0p6_replicate"),
                                                "speech_4s")["tokens"]).long()[:, :, :12].repeat(2, 1, 1)
    latents = model.quantizer.decode(tokens)
    before = {n: t.clone() for n, t in state.items()}
    with torch.inference_mode():
        pieces = []
        for a, b in ((0, 1), (1, 6), (6, 12)):
            audio, new = dec.step(latents[..., a:b], state)
            # every stateful module wrote its state exactly once, and state_in was left alone
            assert set(new) == set(spec) and all(torch.equal(state[n], before[n]) for n in spec)
            state, before = new, {n: t.clone() for n, t in new.items()}
            pieces.append(audio)
        offline = dec(latents)
    # contracts §5, streaming: <= 1e-5 against offline decoding of the same tokens
    assert float((torch.cat(pieces, -1) - offline).abs().max()) <= compare.AUDIO_MAX_ABS_TOL


def test_every_encoder_conv_streams_exactly_once_per_piece(models, monkeypatch):
    """No second description of the encoder: a streaming step is the modules' own forward, and
    it reaches every conv of the encoder exactly once."""
    from nanocodec.nn.conv import Conv1d

    model = models["nano0p6_replicate"]
    calls = []
    original = Conv1d.stream
    monkeypatch.setattr(Conv1d, "stream", lambda self, x, state: calls.append(self) or original(self, x, state))
    enc = model.stream_encoder()
    convs = [m for m in model.encoder.modules() if isinstance(m, Conv1d)]
    for piece in (torch.zeros(1, 3000), torch.zeros(1, 5)):
        calls.clear()
        enc.step(piece)
        assert len(calls) == len(convs) and {id(c) for c in calls} == {id(c) for c in convs}
    calls.clear()
    enc.flush()
    assert len(calls) == len(convs)


# ---- multi-stream slots (contracts §8) ---------------------------------------------------------
def solo(model, tokens_list):
    dec = model.stream_decoder(1)
    return torch.cat([dec.step(t) for t in tokens_list], -1)


def test_slots_equal_their_solo_streams_whatever_the_others_do(models):
    """Four slots; streams join late, leave, idle and are reset mid-way; each slot's output equals
    a fresh solo stream fed the same tokens (contracts §8: <= 1e-5)."""
    model = models["nano0p6_replicate"]
    g, size = model.num_codebooks, model.codebook_size
    gen = torch.Generator().manual_seed(5)
    n_slots, steps = 4, 14
    dec = model.stream_decoder(batch_size=n_slots)
    fed = [[] for _ in range(n_slots)]  # tokens each slot received since its last reset
    outs = [[] for _ in range(n_slots)]
    for step in range(steps):
        n = 1 + step % 3
        if step == 7:
            dec.reset(slots=[1])
            fed[1], outs[1] = [], []
        active = [step >= 3, step % 4 != 2, step < 9, True]  # 0 joins late, 1 idles, 2 leaves, 3 always
        tokens = torch.randint(0, size, (n_slots, g, n), generator=gen)
        tokens[~torch.tensor(active)] = -7  # an inactive slot's rows are ignored, not validated
        out = dec.step(tokens, active=active)
        assert out.shape == (n_slots, 1, n * model.samples_per_frame)
        for i in range(n_slots):
            if active[i]:
                fed[i].append(tokens[i : i + 1])
                outs[i].append(out[i : i + 1])
            else:
                assert not out[i].any()
    for i in range(n_slots):
        err = float((torch.cat(outs[i], -1) - solo(model, fed[i])).abs().max())
        assert err <= compare.AUDIO_MAX_ABS_TOL, (i, err)


def test_slot_arguments_are_checked(models):
    model = models["nano0p6_replicate"]
    dec = model.stream_decoder(batch_size=3)
    tokens = torch.zeros(3, model.num_codebooks, 1, dtype=torch.long)
    for bad in ([True, False], [1, 0, 1], "yes"):
        with pytest.raises(InvalidInputError, match="active"):
            dec.step(tokens, active=bad)
    for bad in ([3], [-1], [0.5], 1):
        with pytest.raises(InvalidInputError, match="slots"):
            dec.reset(slots=bad)
    assert not dec.step(tokens, active=[False] * 3).any()
    with pytest.raises(InvalidInputError):
        model.stream_decoder(batch_size=0)


def test_decoder_step_captures_as_one_graph(models):
    """The CUDA-graph proxy on CPU (issue 21): the step traces as one graph, with no graph break
    (no host sync or data-dependent Python control flow). backend="eager": capture only, no codegen.
    The reference modules: what runs off the CPU (backend "auto" there)."""
    import copy

    model = copy.deepcopy(models["nano0p6_replicate"]).set_backend("reference")
    dec = model.decoder
    state = dec.init_state(2)
    latents = model.quantizer.decode(torch.randint(0, model.codebook_size, (2, model.num_codebooks, 1)))
    torch._dynamo.reset()
    step = torch.compile(dec.step, fullgraph=True, backend="eager")
    with torch.inference_mode():
        audio, new = step(latents, state)
        want, want_state = dec.step(latents, state)
    assert torch.equal(audio, want) and all(torch.equal(new[n], want_state[n]) for n in want_state)


def test_a_streamed_model_still_copies_and_pickles(models):
    """The cpu backend's step caches (oneDNN-reordered weights, which have no storage) are not
    state: a model that has streamed deep-copies and pickles, and the copy streams the same."""
    import copy
    import pickle

    model = models["nano0p6_replicate"]
    tokens = torch.randint(0, model.codebook_size, (1, model.num_codebooks, 3), generator=torch.Generator().manual_seed(2))
    want = model.stream_decoder().step(tokens)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert torch.equal(clone.stream_decoder().step(tokens), want)
