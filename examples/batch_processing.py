"""Encode several files in one ragged batch, then decode the batch.

    python examples/batch_processing.py MODEL_DIR a.wav b.flac c.wav ...

Items of different lengths go into one zero-padded tensor with their lengths. nanocodec's `encode`
is batch invariant: each item gets exactly the tokens it gets alone (NeMo's own batched encode
does not; `nemo_batch_compat=True` reproduces NeMo instead).
"""
import sys

import torch

from nanocodec import AudioCodecModel
from nanocodec.fileio import audio


def main(model_dir: str, *files: str) -> None:
    model = AudioCodecModel.from_pretrained(model_dir)
    clips = [audio.load(f, sample_rate=model.sample_rate)[0] for f in files]
    lengths = torch.tensor([len(c) for c in clips])
    batch = torch.zeros(len(clips), int(lengths.max()))
    for i, c in enumerate(clips):
        batch[i, : len(c)] = c

    tokens, tokens_len = model.encode(batch, lengths)  # [B, G, F_max]; frames past tokens_len[i] are 0
    decoded, decoded_len = model.decode(tokens, tokens_len)  # [B, 1, F_max * samples_per_frame]

    for i, f in enumerate(files):
        solo, _ = model.encode(clips[i])
        same = torch.equal(solo[0], tokens[i, :, : tokens_len[i]])
        y = audio.trim(decoded[i, 0], lengths[i])
        print(f"{f}: {len(clips[i])} samples -> {int(tokens_len[i])} frames, decoded {len(y)} samples, "
              f"tokens equal to encoding it alone: {same}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(*sys.argv[1:])
