"""Tokenize a folder of audio files into shards + manifest.jsonl, then read a few items back.

    python examples/tokenize_corpus.py MODEL_DIR CORPUS_DIR OUT_DIR

The same as `nanocodec tokenize CORPUS_DIR -o OUT_DIR --model MODEL_DIR`. Run it again to resume an
interrupted run: finished shards are kept, the rest is redone, nothing is listed twice.
"""
import json
import sys
from pathlib import Path

from nanocodec import AudioCodecModel
from nanocodec.fileio import token_files
from nanocodec.apps.corpus import tokenize


def main(model_dir: str, corpus: str, out_dir: str) -> None:
    model = AudioCodecModel.from_pretrained(model_dir)
    result = tokenize(corpus, out_dir, model, model_ref=model_dir, shard_size=100, batch_size=8)
    print(f"{result.encoded} files tokenized, {len(result.failed)} unreadable, "
          f"{result.shards_skipped}/{result.shards} shards already done")

    # a training data loader reads the manifest and fetches each item's tokens from its shard
    lines = (Path(out_dir) / "manifest.jsonl").read_text().splitlines()
    for entry in map(json.loads, lines[:3]):
        shard = token_files.read(Path(out_dir) / entry["shard"])
        tokens = shard.tokens[entry["key"]]  # int32 [G, frames]
        print(f"{entry['path']}: {entry['duration_s']} s, tokens {list(tokens.shape)}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
