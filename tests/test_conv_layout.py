"""The fast CPU compute paths (issue 7) against NeMo's own layout.

`layout="nemo"` runs NeMo's NCW `conv1d` calls (bitwise NeMo on the same machine: the live tier
checks that); here both layouts are held to contracts §5 against NeMo's committed recordings, which
may come from another CPU, and the channels-last paths (`"auto"` on CPU: encoder, causal decoder, (Half)Snake in
tiles) and the encoder's patched-in edge padding are checked against it. Tolerance: the two layouts sum the same float32 products in a different order,
so outputs differ by a few float32 ulps of the partial sums: <= 1e-6 relative to the output's max
over convs of up to 11 x 432 terms (observed <= 2e-7), far below contracts §5's 1e-4 on latents.
"""
import pytest
import torch

from nanocodec import AudioCodecModel
from nanocodec.errors import InvalidInputError
from nanocodec.backends import cpu
from nanocodec.backends.cpu import to_channels_last
from nanocodec.nn.activations import LRELU_SLOPE, HalfSnake, Snake
from nanocodec.nn.stream_state import DecoderStep
from nanocodec.nn.conv import CausalConv1d, Conv1d, Ragged
from parity import compare, fixtures


def _layout(module, layout):
    """A standalone module on NeMo's NCW path ("nemo") or the cpu backend's channels-last one."""
    cpu.swap_out(module)
    if layout == "channels_last":
        cpu.swap_in(module, channels_last=True)
    return module

REL_TOL = 1e-6


def _rel(a, b):
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


# (kernel, dilation, stride, explicit padding) of every conv kind the encoders use
CONV_KINDS = [(3, 1, 1, None), (7, 3, 1, None), (11, 5, 1, None), (7, 1, 1, None),
              (4, 1, 2, 1), (6, 1, 3, 2), (12, 1, 6, 3), (14, 1, 7, 4)]


@pytest.mark.parametrize("pad_mode", ["replicate", "reflect", "zeros"])
@pytest.mark.parametrize("kind", CONV_KINDS, ids=lambda k: f"k{k[0]}d{k[1]}s{k[2]}")
def test_channels_last_conv_equals_nemo_layout(pad_mode, kind, one_thread):
    k, d, s, pad = kind
    torch.manual_seed(k * 100 + d * 10 + s)
    conv = Conv1d(5, 6, k, stride=s, dilation=d, padding=pad, pad_mode=pad_mode)
    # lengths around every branch: edges overlapping (fallback to whole padding), just apart, long
    for n in [1, 2, 3, 5, 8, 13, 21, 31, 64, 100, 257, 1000]:
        n -= n % s
        if n == 0 or (pad_mode == "reflect" and conv.padding >= n):
            continue
        x = torch.randn(2, 5, n)
        ref = _layout(conv, "nemo")(x)
        _layout(conv, "channels_last")
        for inp in (x, to_channels_last(x)):
            y = conv(inp)
            assert y.shape == ref.shape
            assert _rel(y, ref) <= REL_TOL, (n, _rel(y, ref))


def test_ragged_channels_last_equals_nemo_layout(one_thread):
    torch.manual_seed(1)
    conv = Conv1d(4, 4, 7, dilation=3, pad_mode="reflect")
    x = torch.randn(3, 4, 200)
    for mode in ("edge", "mask"):
        ragged = Ragged(torch.tensor([200, 150, 60]), mode)
        ref = _layout(conv, "nemo")(x, ragged)
        assert _rel(_layout(conv, "channels_last")(x, ragged), ref) <= REL_TOL


def test_switching_back_to_nemo_layout_is_bitwise_again(one_thread):
    """The cpu backend re-lays a channels-last conv's weight out in place; going back to the
    reference must undo that, or oneDNN silently picks its channels-last kernels for NCW inputs too."""
    torch.manual_seed(2)
    conv = Conv1d(8, 8, 7, pad_mode="replicate")
    x = torch.randn(1, 8, 500)
    expected = torch.nn.functional.conv1d(torch.nn.functional.pad(x, (3, 3), mode="replicate"),
                                          conv.weight.detach().clone(), conv.bias.detach())
    _layout(conv, "channels_last")(x)
    assert not conv.weight.is_contiguous()
    assert torch.equal(_layout(conv, "nemo")(x), expected)


@pytest.mark.parametrize("channels", [1, 2, 27, 54])
def test_in_place_snakes_are_bitwise_nemo(channels):
    """NeMo's expressions, verbatim, against our single-buffer forms, on NCW and channels-last input."""
    torch.manual_seed(channels)
    x = torch.randn(2, channels, 333) * 3
    snake, half = cpu.swap_in(Snake(channels)), cpu.swap_in(HalfSnake(channels))
    with torch.no_grad():
        snake.alpha.uniform_(0.2, 2.0)
        half.alpha.uniform_(0.2, 2.0)

    def nemo_snake(v, alpha):
        return v + (alpha + 1e-9).reciprocal() * torch.sin(alpha * v).pow(2)

    n = channels // 2
    want_snake = nemo_snake(x, snake.alpha.detach())
    want_half = torch.cat([nemo_snake(x[:, :n], half.alpha.detach()),
                           torch.nn.functional.leaky_relu(x[:, n:], LRELU_SLOPE)], dim=1)
    wide = to_channels_last(torch.cat([x, x[..., :5]], -1))  # rows of each item not adjacent
    with torch.inference_mode():
        # NCW; channels-last in tiles (333 steps); a sliced channels-last view; a prime length,
        # which has no tiling (per-channel broadcasting instead)
        for inp, sl in ((x, ...), (to_channels_last(x), ...), (wide[..., :333], ...),
                        (to_channels_last(x[..., :331]), (..., slice(0, 331)))):
            got_snake, got_half = snake(inp), half(inp)
            assert channels == 1 or got_half.stride(1) == inp.stride(1)  # layout kept for the next conv
            assert torch.equal(got_snake, want_snake[sl])
            assert torch.equal(got_half, want_half[sl])
    # with autograd on, the reference form runs (in-place ops cannot take gradients)
    assert torch.equal(half(x.requires_grad_()), want_half)


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (7, 3), (11, 5), (7, 1)])
def test_causal_channels_last_conv_equals_nemo_layout(kernel, dilation, one_thread):
    """The decoder's causal conv, offline and carrying streaming state across uneven chunks."""
    torch.manual_seed(kernel * 10 + dilation)
    conv = CausalConv1d(6, 6, kernel, dilation=dilation)
    x = torch.randn(2, 6, 301)
    ref = _layout(conv, "nemo")(x)
    _layout(conv, "channels_last")
    for inp in (x, to_channels_last(x)):
        y = conv(inp)
        assert y.stride(1) == 1 and _rel(y, ref) <= REL_TOL
        state, pieces = {}, []  # the conv's named state, carried from step to step
        for a, b in [(0, 1), (1, 40), (40, 41), (41, 301)]:
            step = DecoderStep({conv: "conv"}, state)
            pieces.append(conv(inp[..., a:b], step))
            state = step.outputs
        assert _rel(torch.cat(pieces, -1), ref) <= REL_TOL


@pytest.fixture(scope="module")
def model(base_folder):
    return AudioCodecModel.from_pretrained(base_folder)


@pytest.mark.parametrize("name", ["speech_4s", "white_noise", "len_1765"])
def test_both_layouts_within_bounds_of_nemo_recordings(model, name, one_thread):
    """Both layouts against NeMo's committed recordings, under contracts §5 only: the recordings
    were made on another CPU, whose kernels sum in another order (the bitwise claim for layout
    "nemo" is checked against NeMo run live on the same machine: tests/test_parity_live.py)."""
    case = next(c for c in fixtures.model_cases() if c.name == "nano0p6_replicate")
    ref = fixtures.read_ref(case, name)
    audio = torch.from_numpy(fixtures.read_input(name))
    try:
        for layout in ("nemo", "auto"):
            model.set_conv_layout(layout)
            latents = model.encode_latents(audio).latents.numpy()
            tokens = model.encode(audio).tokens.numpy()
            assert compare.latent_rel_error(latents, ref["latents"]) <= compare.LATENT_REL_TOL, layout
            assert compare.compare_tokens(tokens, ref["tokens"], ref["prerounding"]).ok, layout
            # the decoder, whole and (under "auto") in chunks: contracts §5 bounds against NeMo
            for chunk in (None, 0.5):
                decoded = model.decode(torch.from_numpy(ref["tokens"]), chunk_seconds=chunk).audio[:, 0].numpy()
                assert compare.audio_ok(decoded, ref["decoded"])[0], (layout, chunk)
    finally:
        model.set_conv_layout("auto")


@pytest.mark.parametrize("name", ["speech_4s", "white_noise"])
def test_auto_latents_stay_within_2e6_of_ncw(model, name, one_thread):
    """The accuracy gate's promise (issue 16): whatever this CPU's channels-last kernels do, the
    default path's latents stay within 2e-6 (relative to their max) of NeMo's NCW sums on the
    same machine; an ungated channels-last path measured 0.97e-5 on an AMD EPYC."""
    audio = torch.from_numpy(fixtures.read_input(name))
    try:
        ncw = model.set_conv_layout("nemo").encode_latents(audio).latents
        auto = model.set_conv_layout("auto").encode_latents(audio).latents
    finally:
        model.set_conv_layout("auto")
    assert _rel(auto, ncw) <= 2e-6


def test_unknown_layout_is_refused(model):
    with pytest.raises(InvalidInputError, match="conv layout"):
        model.set_conv_layout("nhwc")


@pytest.mark.parametrize("in_channels,kernel", [(8, 12), (4, 16), (8, 8), (24, 11)])
def test_bfloat16_conv_is_right_for_small_channel_counts(in_channels, kernel):
    """oneDNN's 16-bit CPU conv is wrong for some small in-channel counts (8 x kernel 12: relative
    error ~1 in both layouts; the reduced-width fixture's third down-sampling conv). Bound: bf16
    keeps 8 significand bits (2^-8 = 0.4% per rounding) and the fp32 fallback rounds the input,
    weight and output only: <= 2% relative to the output's max; the bug gives ~100%."""
    torch.manual_seed(in_channels * kernel)
    conv = Conv1d(in_channels, 16, kernel, stride=6 if kernel == 12 else 1, padding=3 if kernel == 12 else None,
                  pad_mode="zeros")
    x = torch.randn(2, in_channels, 600)
    ref = _layout(conv, "nemo")(x)
    conv.to(torch.bfloat16)
    for layout in ("nemo", "channels_last"):
        y = _layout(conv, layout)(x.bfloat16())
        assert y.dtype == torch.bfloat16
        assert _rel(y.float(), ref) <= 2e-2, (layout, _rel(y.float(), ref))


@pytest.mark.parametrize("layout", ["auto", "nemo"])
def test_bfloat16_tokens_stay_close_to_nemo_float32(base_folder, layout, one_thread):
    """bf16 moves tokens (issue 7): a rounding of the latents near a level boundary flips one.
    NeMo's own bf16 autocast kept 84.6% of its float32 tokens on this model (cuda_device.py dry
    run); ours kept 88-94% (speech_4s, white_noise). Bound 75%: the oneDNN bug above gave 0%."""
    model = AudioCodecModel.from_pretrained(base_folder, dtype=torch.bfloat16).set_conv_layout(layout)
    case = next(c for c in fixtures.model_cases() if c.name == "nano0p6_replicate")
    for name in ("speech_4s", "white_noise"):
        ref = fixtures.read_ref(case, name)
        tokens = model.encode(torch.from_numpy(fixtures.read_input(name))).tokens.numpy()
        assert (tokens == ref["tokens"]).mean() >= 0.75, name


def test_channels_last_decoder_keeps_a_margin_below_the_audio_bound(tmp_path, one_thread):
    """The decoder amplifies every summation-order difference by all its later layers: with its
    first conv channels-last too, this fixture's audio moved up to 5.5e-6 from NeMo's (12 random
    token sequences; a live round saw 7.0e-6), too close to contracts §5's 1e-5 for CI's fresh live
    seeds. With the first conv NCW, as NeMo sums it: <= 1.5e-6 (whole input; at the same 0.5 s
    chunking <= 1.3e-6 on an AVX2 AMD EPYC, 8 seeds). Bound 4e-6: 2.5x below the contract.
    The layout is compared at the same chunking: chunking alone moves NeMo's own NCW sums too
    (shorter conv inputs, other kernels): up to 4.2e-6 for 0.5 s chunks on an AMD EPYC, which once
    failed this test's earlier form (layout and chunking together against the whole input: 4.5e-6).
    That part is bounded by the contract itself."""
    from nanocodec.convert.converter import convert

    from conftest import FIXTURES

    convert(str(FIXTURES / "models" / "nano1p78.nemo"), str(tmp_path / "m"))
    model = AudioCodecModel.from_pretrained(tmp_path / "m")
    for seed in range(4):
        tokens = torch.randint(0, model.codebook_size, (1, model.num_codebooks, 60),
                               generator=torch.Generator().manual_seed(seed))
        whole = model.set_conv_layout("nemo").decode(tokens, chunk_seconds=None).audio
        for chunk in ("auto", None, 0.5):
            ref = whole if chunk is None else model.set_conv_layout("nemo").decode(tokens, chunk_seconds=chunk).audio
            out = model.set_conv_layout("auto").decode(tokens, chunk_seconds=chunk).audio
            assert float((out - ref).abs().max()) <= 4e-6, (seed, chunk)
            assert float((out - whole).abs().max()) <= 1e-5, (seed, chunk)  # contracts §5
