"""`model.compile(...)`: torch.compile applied to what `encode` and `decode` actually run.

`nn.Module.compile` compiles the module's `__call__`, i.e. `forward`; nanocodec's `encode` and `decode`
are methods of their own that call the encoder, the quantizer and the decoder directly, so a plain
`nn.Module.compile` (the seed's README's `model.compile(mode="reduce-overhead")`) compiles a path they
never take and speeds nothing up. Here the encoder's and the decoder's `forward` are compiled instead
(the quantizer is a few elementwise ops on small latents and stays eager), for the calls `encode` and
`decode` make on whole inputs: `chunk_seconds=None`, or inputs shorter than one chunk. Streaming calls
(a `state`), ragged encoder batches and chunked calls stay eager and exact, so every result is the
eager one up to float rounding (the token rule of contracts §5).

On the CPU it is refused unless asked for with `allow_cpu=True`: measured on a 2-core Intel Xeon, the
default eager cpu backend is faster than the compiled model once compiled, and compiling costs minutes
(figures above `CPU_REFUSAL`). On CUDA it is what the seed's users ask for (not measured yet: no GPU so far).
"""
from __future__ import annotations

import inspect

import torch

from ..errors import InvalidInputError, NotSupportedError

# The measured reason, in the message a CPU user gets. Measured on a 2-core Intel Xeon shared with other
# jobs (full-size 0.6 kbps model, 5 s of audio, 1 thread, torch 2.13.0+cpu, inductor, default mode):
# compiling took 196 s (encoder) + 293 s (decoder) on first use, 30 s when inductor's on-disk cache was
# warm, and 421 s again for a second input length (dynamic shapes); then a round trip took 8.6 s against
# 7.2 s for the default eager cpu backend (medians of 5 interleaved rounds). Tokens were identical to the
# eager reference modules', decoded audio within 4.5e-7.
CPU_REFUSAL = (
    "model.compile() does not pay on the CPU: measured on a 2-core Intel Xeon (full-size model, 5 s of audio, "
    "1 thread), torch.compile took about 8 minutes to compile (again for every new input length) and the "
    "compiled round trip was then 1.2x slower than the default eager cpu backend, which is tuned for this "
    "CPU. Use the model as it is (from_pretrained's backend='auto'); pass allow_cpu=True to compile anyway."
)


def compile_model(model, *, allow_cpu: bool = False, **compile_kwargs):
    """Compile `model`'s encoder and decoder in place (torch.compile's own arguments: mode, dynamic,
    fullgraph, backend, options, disable); returns `model`. Calling it again recompiles with the new
    arguments; `uncompile(model)` restores the eager modules. Chunked calls stay eager: pass
    `chunk_seconds=None` to `encode`/`decode` for the compiled path on long inputs."""
    if model.device.type == "cpu" and not allow_cpu:
        raise NotSupportedError(CPU_REFUSAL)
    unknown = set(compile_kwargs) - {"mode", "dynamic", "fullgraph", "backend", "options", "disable"}
    if unknown:
        raise InvalidInputError(f"model.compile() takes torch.compile's arguments (mode, dynamic, fullgraph, backend, "
                                f"options, disable); got {', '.join(sorted(unknown))}")
    uncompile(model)
    if model.device.type == "cpu" and model.backend != "reference":
        # the cpu backend's hand-made fast paths (channels-last tiles, edge patches) are Python loops that
        # dynamo would unroll; inductor does its own fusion on the reference modules
        model.set_backend("reference")
    for module in (model.encoder, model.decoder):
        _compile_forward(module, compile_kwargs)
    model.compiled = dict(compile_kwargs)
    return model


def uncompile(model) -> None:
    for module in (model.encoder, model.decoder):
        module.__dict__.pop("forward", None)  # the instance attribute set below: the class's forward again
    model.compiled = None


def is_compiled(model) -> bool:
    return getattr(model, "compiled", None) is not None


def _compile_forward(module, compile_kwargs: dict) -> None:
    eager = type(module).forward.__get__(module)
    compiled = torch.compile(eager, **compile_kwargs)
    signature = inspect.signature(eager)

    def forward(*args, **kwargs):
        # whole-input calls only: a streaming state or a ragged batch's lengths object is Python state
        # that dynamo would guard on and recompile for at every step
        arguments = signature.bind(*args, **kwargs).arguments
        if arguments.get("state") is not None or arguments.get("ragged") is not None:
            return eager(*args, **kwargs)
        return compiled(*args, **kwargs)

    module.forward = forward
