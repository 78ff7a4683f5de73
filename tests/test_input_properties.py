"""Property tests at the API boundary (issue 9, contracts §1, §4): over shapes, dtypes, containers,
values and lengths, `encode` and `decode` either succeed with outputs that keep the contract or
raise `InvalidInputError`; no other exception ever comes out. An independent oracle says which
inputs are valid, so valid inputs are never refused either.

Kept small for a shared 2-core machine: tiny tensors, ~40 examples per property, no deadline,
derandomized (the same examples on every run) and no example database written.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import BASE_NEMO
from nanocodec import AudioCodecModel
from nanocodec.errors import InvalidInputError
from nanocodec.validation import MAX_AUDIO_ABS

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FLOAT_OK = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
AUDIO_DTYPES = FLOAT_OK + (torch.int16, torch.int32, torch.uint8, torch.bool, torch.complex64, torch.float8_e4m3fn)
INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.uint8, torch.uint16, torch.uint64)
LEN_DTYPES = INT_DTYPES + (torch.float32, torch.bool)
NUMPY_OK = {torch.float32, torch.float64, torch.float16, torch.int16, torch.int32, torch.uint8, torch.bool,
            torch.complex64, torch.int64, torch.uint16, torch.uint64}


@pytest.fixture(scope="module")
def model(base_folder):
    return AudioCodecModel.from_pretrained(base_folder)


@pytest.fixture(scope="module")
def reflect_model(tmp_path_factory):
    from nanocodec.convert.converter import convert
    from parity.oracle.derive import derive_reflect

    d = tmp_path_factory.mktemp("reflect")
    convert(str(derive_reflect(BASE_NEMO, d / "r.nemo")), str(d / "r"))
    return AudioCodecModel.from_pretrained(d / "r")


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def lengths_spec(batch: int, maximum: int, valid: bool = True):
    """(kind, dtype, values): how `audio_len` / `tokens_len` is passed; `valid=False` also draws
    wrong counts, out-of-range values and non-integer dtypes."""
    good = st.integers(1, max(1, maximum))
    if valid:
        dtypes = [d for d in INT_DTYPES if d in (torch.int64, torch.int32, torch.uint64)
                  or torch.iinfo(d).max >= maximum]
        return st.one_of(
            st.just(("none", None, None)),
            st.tuples(st.just("tensor"), st.sampled_from(dtypes), st.lists(good, min_size=batch, max_size=batch)),
            st.tuples(st.just("list"), st.just(None), st.lists(good, min_size=batch, max_size=batch)),
            st.tuples(st.just("numpy"), st.just(torch.int64), st.lists(good, min_size=batch, max_size=batch)),
            *([st.tuples(st.just("scalar"), st.just(torch.int64), good.map(lambda v: [v]))] if batch == 1 else []),
        )
    value = st.one_of(good, st.sampled_from([0, -1, maximum + 1, 2**40]))
    return st.one_of(
        st.tuples(st.just("tensor"), st.sampled_from(LEN_DTYPES),
                  st.lists(value, min_size=max(0, batch - 1), max_size=batch + 1)),
        st.tuples(st.just("list"), st.just(None), st.lists(value, min_size=batch, max_size=batch)),
        st.tuples(st.just("scalar"), st.just(torch.int64), value.map(lambda v: [v])),
        st.tuples(st.just("numpy"), st.sampled_from([torch.int64, torch.float64]),
                  st.lists(value, min_size=batch, max_size=batch)),
    )


def make_lengths(spec):
    kind, dtype, values = spec
    if kind == "none":
        return None
    if kind == "list":
        return list(values)
    if kind == "numpy":
        return np.array(values, dtype=np.int64 if dtype == torch.int64 else np.float64)
    if kind == "scalar":
        return torch.tensor(values[0], dtype=torch.int64)
    return _tensor_of(values, dtype)


def _tensor_of(values, dtype):
    """`values` (Python ints) in `dtype`, wrapping like a C cast where they do not fit (what a
    careless caller's array would hold)."""
    if dtype in (torch.float32, torch.bool):
        return torch.tensor(values, dtype=torch.float64).to(dtype)
    if dtype == torch.uint64:
        return torch.from_numpy(np.array([v % 2**64 for v in values], dtype=np.uint64))
    info = torch.iinfo(dtype)
    span = info.max - info.min + 1
    return torch.tensor([(v - info.min) % span + info.min for v in values], dtype=dtype)


def effective_lengths(spec, batch: int, maximum: int):
    """The oracle: the item lengths these `lengths` mean, or None where they are invalid."""
    kind, dtype, values = spec
    if kind == "none":
        return [maximum] * batch
    if dtype in (torch.float32, torch.float64, torch.bool):
        return None
    if kind == "tensor":
        values = _tensor_of(values, dtype).tolist()
    if len(values) != batch or any(not 1 <= v <= maximum for v in values):
        return None
    return values


AUDIO_MUTATIONS = [None] * 8 + ["rank0", "rank4", "channels", "batch0", "t0", "dtype", "nan", "inf", "-inf",
                                 "huge", "lengths"]


@st.composite
def audio_cases(draw):
    """A valid input about half the time, else one thing wrong (or something that only looks wrong,
    like NaN past an item's length); the oracle decides which."""
    mutation = draw(st.sampled_from(AUDIO_MUTATIONS))
    rank = {"rank0": 0, "rank4": 4}.get(mutation) or draw(st.sampled_from([2, 3] if mutation == "batch0" else [1, 2, 3]))
    batch = 0 if mutation == "batch0" else draw(st.sampled_from([1, 2])) if rank >= 2 else 1
    channels = draw(st.sampled_from([2, 3])) if mutation == "channels" else 1
    t = 0 if mutation == "t0" else draw(st.one_of(st.sampled_from([1, 2, 1763, 1764, 1765, 3529]), st.integers(1, 4000)))
    dtype = draw(st.sampled_from(AUDIO_DTYPES[len(FLOAT_OK):] if mutation == "dtype" else FLOAT_OK))
    container = draw(st.sampled_from(["tensor", "tensor", "numpy", "list", "transposed", "reversed"]))
    spoil = mutation if mutation in ("nan", "inf", "-inf", "huge") else draw(st.sampled_from([None, None, "edge"]))
    spoil_at = draw(st.floats(0, 1))
    lens = draw(lengths_spec(batch, t, valid=mutation != "lengths"))
    seed = draw(st.integers(0, 2**16))
    return rank, batch, channels, t, dtype, container, spoil, spoil_at, lens, seed


def make_audio(rank, batch, channels, t, dtype, container, spoil, spoil_at, seed):
    shape = {0: (), 1: (t,), 2: (batch, t), 3: (batch, channels, t), 4: (batch, channels, 1, t)}[rank]
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1
    flat = x.view(-1)
    if spoil and flat.numel():
        value = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "huge": 3e4, "edge": -MAX_AUDIO_ABS}[spoil]
        flat[min(flat.numel() - 1, int(spoil_at * flat.numel()))] = value
    if dtype.is_floating_point or dtype.is_complex:
        x = x.to(dtype)
    else:
        x = (x * 100).nan_to_num(0, 0, 0).to(dtype) if dtype != torch.bool else x > 0
    if container == "numpy" and dtype in NUMPY_OK:
        return x.numpy()
    if container == "list" and dtype in FLOAT_OK[:2] and x.numel() <= 64:
        return x.tolist()
    if container == "transposed" and rank == 2:
        return x.t().contiguous().t()  # same values, non-contiguous
    if container == "reversed" and rank >= 1 and dtype in NUMPY_OK:
        return x.flip(-1).numpy()[..., ::-1]  # numpy view with a negative stride
    return x


def valid_region(x: torch.Tensor, lens) -> torch.Tensor:
    """[B, T] samples that count (within each item's length)."""
    mask = torch.arange(x.shape[-1])[None, :] < torch.tensor(lens)[:, None]
    return x[mask]


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(case=audio_cases())
def test_encode_only_documented_errors(model, case):
    rank, batch, channels, t, dtype, container, spoil, spoil_at, lens_spec, seed = case
    audio = make_audio(rank, batch, channels, t, dtype, container, spoil, spoil_at, seed)
    audio_len = make_lengths(lens_spec)
    expected = _expected_encode(audio, rank, batch, channels, t, dtype, lens_spec)
    try:
        tokens, tokens_len = model.encode(audio, audio_len)
    except InvalidInputError as e:
        event("refused")
        assert expected is None, f"valid input refused: {e}"
        assert str(e)
        return
    event("accepted")
    assert expected is not None, "invalid input accepted"
    spf, g = model.samples_per_frame, model.num_codebooks
    frames = [-(-n // spf) for n in expected]
    assert tokens.dtype == torch.int32 and tokens_len.dtype == torch.int64
    assert tokens.shape == (len(expected), g, max(frames)) and tokens_len.tolist() == frames
    assert int(tokens.min()) >= 0 and int(tokens.max()) < model.codebook_size
    for i, f in enumerate(frames):
        assert torch.all(tokens[i, :, f:] == 0)


def _expected_encode(audio, rank, batch, channels, t, dtype, lens_spec):
    """Item lengths if the input is valid, else None (independent of nanocodec's checks)."""
    if dtype not in FLOAT_OK or rank not in (1, 2, 3) or (rank == 3 and channels != 1) or batch == 0 or t == 0:
        return None
    lens = effective_lengths(lens_spec, batch, t)
    if lens is None:
        return None
    x = torch.as_tensor(np.array(audio, copy=True)) if not isinstance(audio, torch.Tensor) else audio
    x = x.reshape(batch, t).to(torch.float64)
    counted = valid_region(x, lens)
    if not bool(torch.isfinite(counted).all()) or bool((counted.abs() > MAX_AUDIO_ABS).any()):
        return None
    return lens


TOKEN_MUTATIONS = [None] * 8 + ["rank1", "rank4", "groups", "frames0", "batch0", "dtype", "low", "high", "lengths"]


@st.composite
def token_cases(draw):
    mutation = draw(st.sampled_from(TOKEN_MUTATIONS))
    rank = {"rank1": 1, "rank4": 4}.get(mutation) or draw(st.sampled_from([3] if mutation == "batch0" else [2, 3, 3]))
    batch = 0 if mutation == "batch0" else draw(st.sampled_from([1, 2])) if rank >= 3 else 1
    groups = draw(st.sampled_from([3, 5, 1])) if mutation == "groups" else 4
    frames = 0 if mutation == "frames0" else draw(st.sampled_from([1, 2, 3]))
    dtype = draw(st.sampled_from((torch.float32, torch.bool) if mutation == "dtype" else INT_DTYPES))
    low = draw(st.sampled_from([-1, -(2**63)])) if mutation == "low" else 0
    high = draw(st.sampled_from([4032, 2**31, 2**64 - 1])) if mutation == "high" else 4031
    lens = draw(lengths_spec(batch, frames, valid=mutation != "lengths"))
    seed = draw(st.integers(0, 2**16))
    container = draw(st.sampled_from(["tensor", "tensor", "numpy", "list"]))
    return rank, batch, groups, frames, dtype, low, high, lens, seed, container


@SETTINGS
@given(case=token_cases())
def test_decode_only_documented_errors(model, case):
    rank, batch, groups, frames, dtype, low, high, lens_spec, seed, container = case
    shape = {1: (frames,), 2: (groups, frames), 3: (batch, groups, frames), 4: (batch, groups, frames, 1)}[rank]
    gen = np.random.default_rng(seed)
    values = gen.integers(0, 4032, size=shape).astype(object)
    if values.size:  # put the extreme values somewhere
        values.flat[gen.integers(values.size)] = low
        values.flat[gen.integers(values.size)] = high
    tokens = _tensor_of(values.reshape(-1).tolist(), dtype).reshape(shape) if dtype not in (torch.float32, torch.bool) \
        else torch.tensor(values.astype(np.float64)).to(dtype).reshape(shape)
    stored = tokens.to(torch.float64)  # the values as the caller holds them (uint16/uint64 cannot be compared)
    if container == "numpy" and dtype in NUMPY_OK:
        tokens = tokens.numpy()
    elif container == "list" and dtype == torch.int64:
        tokens = tokens.tolist()
    tokens_len = make_lengths(lens_spec)
    expected = _expected_decode(stored, rank, batch, groups, frames, dtype, lens_spec, model)
    try:
        audio, audio_len = model.decode(tokens, tokens_len)
    except InvalidInputError as e:
        event("refused")
        assert expected is None, f"valid tokens refused: {e}"
        return
    event("accepted")
    assert expected is not None, "invalid tokens accepted"
    spf = model.samples_per_frame
    assert audio.shape == (len(expected), 1, frames * spf) and audio.dtype == torch.float32
    assert audio_len.tolist() == [n * spf for n in expected] and bool(torch.isfinite(audio).all())


def _expected_decode(stored, rank, batch, groups, frames, dtype, lens_spec, model):
    if dtype in (torch.float32, torch.bool) or rank not in (2, 3) or groups != model.num_codebooks:
        return None
    b = 1 if rank == 2 else batch
    if b == 0 or frames == 0:
        return None
    lens = effective_lengths(lens_spec, b, frames)
    if lens is None:
        return None
    x = stored.reshape(b, groups, frames)
    for i, n in enumerate(lens):
        counted = x[i, :, :n]
        if bool((counted < 0).any()) or bool((counted >= model.codebook_size).any()):
            return None
    return lens


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(frames=st.integers(1, 5), extra=st.integers(0, 1763), batch=st.integers(1, 2), compat=st.booleans())
def test_reflect_model_too_short_is_invalid_input(reflect_model, frames, extra, batch, compat):
    from nanocodec.model import min_reflect_frames

    spf = reflect_model.samples_per_frame
    n = (frames - 1) * spf + extra + 1  # -> `frames` frames
    lens = torch.tensor([n] + [spf * 5] * (batch - 1))  # a long neighbour: the check is per item
    audio = torch.rand(batch, int(lens.max()), generator=torch.Generator().manual_seed(n)) - 0.5
    shortest = frames if not compat else -(-int(lens.max()) // spf)
    try:
        tokens, _ = reflect_model.encode(audio, lens, nemo_batch_compat=compat)
    except InvalidInputError as e:
        event("refused")
        assert shortest < min_reflect_frames(reflect_model) and "reflect" in str(e)
    else:
        event("accepted")
        assert shortest >= min_reflect_frames(reflect_model) and tokens.shape[-1] == max(frames, -(-int(lens.max()) // spf))


def test_audio_edge_values(model):
    """Exactly ±MAX_AUDIO_ABS is accepted, beyond it refused; NaN past an item's length is ignored."""
    x = torch.zeros(2, 2000)
    x[0, 5] = MAX_AUDIO_ABS
    model.encode(x)
    x[1, 7] = -MAX_AUDIO_ABS * 1.01
    with pytest.raises(InvalidInputError, match=r"batch items \[1\].*\[-1, 1\]"):
        model.encode(x)
    x[1, 7] = 0
    x[1, 1500:] = 1e9
    model.encode(x, torch.tensor([2000, 1500]))
    with pytest.raises(InvalidInputError, match="int16: x / 32768"):
        model.encode(torch.full((3000,), 32767.0))


@pytest.mark.parametrize(
    "audio, match",
    [
        (torch.zeros(3000, dtype=torch.complex64), "must be real"),
        (torch.zeros(3000, dtype=torch.float8_e4m3fn), "not supported"),
        (torch.zeros(1, 3000).to_sparse(), "dense"),
        (torch.zeros(1, 3000, device="meta"), "meta"),
        (np.array([0.0, None]), "numpy dtype object"),
        (np.array(["a", "b"]), "numpy dtype <U1"),
        (object(), "torch.Tensor or numpy array"),
        ([[0.0, 1.0], [0.0]], "could not be read"),
    ],
    ids=["complex", "float8", "sparse", "meta", "numpy-object", "numpy-str", "object", "ragged-list"],
)
def test_odd_audio_containers_are_invalid_input(model, audio, match):
    with pytest.raises(InvalidInputError, match=match):
        model.encode(audio)


def test_odd_but_valid_audio_containers_match_the_plain_tensor(model):
    x = torch.rand(2, 3000, generator=torch.Generator().manual_seed(0)) - 0.5
    want = model.encode(x).tokens
    big_endian = x.numpy().astype(">f4")
    reversed_view = np.ascontiguousarray(x.numpy()[:, ::-1])[:, ::-1]
    for other in (big_endian, reversed_view, x.t().contiguous().t(), x.double(), x.tolist()):
        assert torch.equal(model.encode(other).tokens, want)


def test_uint64_tokens_and_lengths_past_int64(model):
    tokens = torch.from_numpy(np.full((1, model.num_codebooks, 2), 2**64 - 1, dtype=np.uint64))
    with pytest.raises(InvalidInputError, match="18446744073709551615 .* out of range"):
        model.decode(tokens)
    ok = torch.from_numpy(np.zeros((1, model.num_codebooks, 2), dtype=np.uint64))
    with pytest.raises(InvalidInputError, match=r"\[1, 2\]"):
        model.decode(ok, torch.from_numpy(np.array([2**64 - 1], dtype=np.uint64)))
    assert model.decode(ok, torch.from_numpy(np.array([1], dtype=np.uint64))).audio_len.tolist() == [model.samples_per_frame]


# ---------------------------------------------------------------------------------------------
# channel layouts (issue 20): interleaved channels are refused by an exact rule, never guessed
# ---------------------------------------------------------------------------------------------
def _layout_verdict(shape) -> str | None:
    """The documented rule (nanocodec.validation.interleaved_channels), written out independently:
    None for a mono layout, else which refusal the shape gets."""
    def small_last(rows, cols):
        return 1 <= cols <= 8 and rows > 64 * cols

    if len(shape) == 2:
        return "interleaved" if small_last(*shape) else None
    if len(shape) == 3:
        return None if shape[1] == 1 else "interleaved" if small_last(shape[1], shape[2]) else "channels first"
    if len(shape) >= 4:
        return "interleaved" if small_last(shape[-2], shape[-1]) else "not audio"
    return None


@st.composite
def layout_shapes(draw):
    """Shapes around the rule's edges: a small last axis (1-10) with rows around 64x it, and mono
    layouts with long or short time axes."""
    rank = draw(st.sampled_from([1, 2, 2, 3, 3, 4]))
    cols = draw(st.integers(1, 10))
    rows = draw(st.one_of(st.integers(1, 3), st.sampled_from([64 * cols - 1, 64 * cols, 64 * cols + 1]),
                          st.integers(1, 700)))
    if rank == 1:
        return (rows,)
    if rank == 2:
        return draw(st.sampled_from([(rows, cols), (cols, rows)]))
    if rank == 3:
        return draw(st.sampled_from([(1, rows, cols), (2, 1, rows), (1, cols, rows), (cols, 1, rows)]))
    return (1, 1, rows, cols)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(shape=layout_shapes())
def test_channel_layouts_are_refused_by_the_exact_rule(shape):
    """Checked at the API boundary's validation (no model run: the rule decides before any compute),
    on zeros, so only the layout can be wrong. Costs ~1 s."""
    from nanocodec import validation

    verdict = _layout_verdict(shape)
    try:
        audio, lens = validation.audio_batch(torch.zeros(shape), None, torch.float32, "cpu")
    except InvalidInputError as e:
        event(f"refused: {verdict}")
        words = {"interleaved": ("interleaved", "audio.mean(-1)"), "channels first": ("mix to mono", "keepdim=True"),
                 "not audio": ("must have shape",)}
        assert verdict is not None, f"{shape} refused: {e}"
        assert all(w in str(e) for w in words[verdict]), (shape, verdict, str(e))
        return
    event("accepted")
    assert verdict is None, f"{shape} accepted"
    assert audio.shape == (1 if len(shape) == 1 else shape[0], shape[-1]) and lens.tolist() == [shape[-1]] * audio.shape[0]


def test_stereo_from_soundfile_is_refused_before_any_work(model):
    """sf.read's [T, 2] once became T two-sample items (an 18 GB allocation); the seed's [1, 1, T, 2]
    said nothing of the fix. [B, 1, T] is never refused, however short T is."""
    stereo = np.zeros((161792, 2), np.float32)
    with pytest.raises(InvalidInputError, match=r"\[T, C\] interleaved channels .*audio\.mean\(-1\).*audio\.T"):
        model.encode(stereo)
    with pytest.raises(InvalidInputError, match=r"interleaved channels .*audio\.mean\(-1\)"):
        model.encode(torch.zeros(1, 1, 161792, 2))
    with pytest.raises(InvalidInputError, match=r"C=2 channels .*audio\.mean\(1, keepdim=True\)"):
        model.encode(torch.zeros(1, 2, 3000))
    assert model.encode(torch.zeros(200, 1, 2)).tokens.shape == (200, model.num_codebooks, 1)
