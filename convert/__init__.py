"""`.nemo` -> nanocodec release weights (contracts §3). Repository package: run `python -m convert`."""
__version__ = "0.1.0"
