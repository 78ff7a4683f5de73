"""Parity suite: proves nanocodec equal to NeMo (contracts §5). Repository package, never installed."""
