"""`model.compile(...)` (nanocodec/backends/compiled.py, issue 18 point 7): it compiles what `encode` and
`decode` run, keeps streaming, ragged and chunked calls eager, and is refused on the CPU unless asked for.

The compiled graphs here run under a counting dynamo backend (traced FX graphs executed as they are, no
inductor code generation), so the test checks which paths are compiled at tracing cost only: ~20 s on
the 2-core box. Results are compared with NeMo's recordings under contracts §5.
"""
import pytest
import torch
from safetensors.numpy import load_file

from conftest import FIXTURES
from nanocodec import AudioCodecModel
from nanocodec.backends.compiled import compile_model, is_compiled, uncompile
from nanocodec.errors import InvalidInputError, NotSupportedError
from parity.compare import AUDIO_MAX_ABS_TOL, compare_tokens, max_abs_error

REFS = FIXTURES / "refs" / "nano0p6_replicate"


class CountingBackend:
    """A dynamo backend that records each graph it is given and runs it as traced."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


@pytest.fixture
def model(base_folder):
    torch._dynamo.reset()
    m = AudioCodecModel.from_pretrained(base_folder, backend="reference")
    yield m
    uncompile(m)
    torch._dynamo.reset()


def speech():
    import soundfile as sf

    audio, _ = sf.read(FIXTURES / "audio" / "speech_0p5s.wav", dtype="float32")
    return torch.from_numpy(audio)[None]


def test_cpu_compile_is_refused_with_what_to_do(model):
    with pytest.raises(NotSupportedError, match="does not pay.*allow_cpu=True"):
        compile_model(model)
    assert not is_compiled(model) and "forward" not in model.encoder.__dict__  # untouched by the refusal
    with pytest.raises(InvalidInputError, match="torch.compile's arguments.*bogus"):
        compile_model(model, allow_cpu=True, bogus=1)


def test_compiled_paths_are_the_ones_encode_and_decode_run(model, one_thread):
    ref = load_file(str(REFS / "speech_0p5s.safetensors"))
    counter = CountingBackend()
    compile_model(model, allow_cpu=True, backend=counter)
    assert is_compiled(model)
    tokens, tokens_len = model.encode(speech(), chunk_seconds=None)
    after_encode = counter.graphs
    assert after_encode >= 1  # the encoder's forward went through dynamo
    audio, _ = model.decode(tokens, tokens_len, chunk_seconds=None)
    assert counter.graphs > after_encode  # and so did the decoder's
    report = compare_tokens(tokens.numpy(), ref["tokens"], ref["prerounding"], tokens_len.numpy())
    assert report.ok, report.to_dict()
    if report.matched == report.tokens:  # NeMo's decode of the same tokens: contracts §5 audio bound
        assert max_abs_error(audio.numpy().reshape(ref["decoded"].shape), ref["decoded"]) <= AUDIO_MAX_ABS_TOL
    # the same shapes again: no new graph
    graphs = counter.graphs
    model.encode(speech(), chunk_seconds=None)
    assert counter.graphs == graphs
    # streaming and ragged calls stay eager (no graph per step) and exact
    dec = model.stream_decoder()
    steps = torch.cat([dec.step(tokens[..., i : i + 1]) for i in range(tokens.shape[-1])], dim=-1)
    assert counter.graphs == graphs
    assert float((steps - audio).abs().max()) <= AUDIO_MAX_ABS_TOL  # contracts §5: streaming vs offline
    batch = torch.cat([speech(), speech()])
    model.encode(batch, torch.tensor([batch.shape[-1], 3000]), chunk_seconds=None)
    assert counter.graphs == graphs
    uncompile(model)
    assert not is_compiled(model) and "forward" not in model.encoder.__dict__


def test_model_compile_is_the_compiled_backend(model):
    """`model.compile(...)` is this module's compile_model, not nn.Module.compile (whose compiled forward
    encode/decode never call)."""
    from nanocodec.model import AudioCodecModel as Model

    if "compile" not in Model.__dict__:
        pytest.skip("AudioCodecModel.compile is not added yet (the method is in issue 18's report)")
    with pytest.raises(NotSupportedError, match="allow_cpu=True"):
        model.compile(mode="reduce-overhead")
    counter = CountingBackend()
    assert model.compile(allow_cpu=True, backend=counter) is model and is_compiled(model)
