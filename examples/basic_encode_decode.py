"""Encode one audio file to tokens and decode them back.

    python examples/basic_encode_decode.py MODEL_DIR input.wav output.wav

MODEL_DIR is a converted model folder (`python -m convert ...`) or a hub repo id in nanocodec's layout.
Any soundfile format and rate works: the file is mixed to mono and resampled to the model's rate.
"""
import sys

import torch

from nanocodec import AudioCodecModel
from nanocodec.fileio import audio


def main(model_dir: str, src: str, dst: str) -> None:
    model = AudioCodecModel.from_pretrained(model_dir)
    x, rate = audio.load(src, sample_rate=model.sample_rate)  # float32 [T], mono, model rate

    tokens, tokens_len = model.encode(x[None], torch.tensor([len(x)]))  # int32 [1, G, F]
    decoded, decoded_len = model.decode(tokens, tokens_len)  # [1, 1, F * samples_per_frame]
    y = audio.trim(decoded[0, 0], len(x))  # drop the padding of the last frame

    audio.write(dst, y, model.sample_rate)
    print(f"{src}: {len(x) / rate:.2f} s -> tokens {list(tokens.shape)} "
          f"({model.config.frame_rate:g} frames/s, {model.config.bitrate / 1000:.2f} kbit/s) -> {dst}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
