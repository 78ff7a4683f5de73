"""`.nemo` -> nanocodec release weights (contracts §3): `python -m nanocodec.convert SRC OUT`, or in a
checkout `python -m convert SRC OUT` / `make convert` (the repository's thin entry, convert/)."""
__version__ = "0.1.0"
