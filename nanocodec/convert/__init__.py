"""`.nemo` or NeMo-named safetensors -> nanocodec release weights (contracts §3): `nanocodec convert SRC OUT`,
`python -m nanocodec.convert SRC OUT`, or in a checkout `python -m convert SRC OUT` / `make convert` (the
repository's thin entry, convert/). `from_pretrained` of such a source converts with the same code and caches
the result (cache.py); sources.py says what a source is, identify.py which preset bare weights are.

`__version__` is part of the cache key: bump it whenever the converter's output for a source changes."""
__version__ = "0.1.0"
