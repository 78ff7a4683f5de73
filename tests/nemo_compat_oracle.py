"""NeMo's side of tests/test_nemo_compat.py's live test, run in the NeMo oracle environment
(parity/oracle/.venv): `python tests/nemo_compat_oracle.py MODEL.nemo SPEECH.wav OUT.npz`.

Records what NeMo 3.0.0 does where nanocodec's drop-in documents a choice: token ids outside
0..codebook_size-1 (NeMo wraps them in FSQ decode) and `sample_rate=` other than the model's (NeMo's
`resample_batch`). Not collected by pytest (no test_ prefix); imports NeMo, never nanocodec.
"""
import sys

import numpy as np
import torch


def main(nemo_path: str, speech_wav: str, out: str) -> None:
    torch.set_num_threads(1)
    from nemo.collections.tts.models import AudioCodecModel

    model = AudioCodecModel.restore_from(nemo_path, map_location="cpu").eval()
    g = torch.Generator().manual_seed(20)
    size = int(model.codebook_size)
    tokens = torch.randint(-3 * size, 5 * size, (2, model.num_codebooks, 5), generator=g)
    tokens[0, 0, 0], tokens[0, 1, 0] = -1, size  # the top code of every dimension; 0
    tokens[1, 2, 1], tokens[1, 3, 2] = 2**40, -(2**40) - 7  # far out, both signs
    tokens_len = torch.tensor([5, 3])
    import soundfile as sf
    from nemo.collections.audio.parts.utils.transforms import resample  # what resample_batch calls

    speech, rate = sf.read(speech_wav, dtype="float32")  # 22.05 kHz speech, upsampled: a 44.1 kHz input
    x44 = resample(torch.from_numpy(speech), rate, 44100)
    audio = torch.stack([x44, x44.flip(0)])
    audio_len = torch.tensor([x44.shape[0], 60001])
    with torch.no_grad():
        decoded, decoded_len = model.decode(tokens=tokens, tokens_len=tokens_len)
        dequantized = model.dequantize(tokens=tokens, tokens_len=tokens_len)
        codes, codes_len = model.encode(audio=audio, audio_len=audio_len, sample_rate=44100)
    np.savez(out, tokens=tokens.numpy(), tokens_len=tokens_len.numpy(), decoded=decoded.numpy(),
             decoded_len=decoded_len.numpy(), dequantized=dequantized.numpy(), audio=audio.numpy(),
             audio_len=audio_len.numpy(), codes=codes.numpy(), codes_len=codes_len.numpy())


if __name__ == "__main__":
    main(*sys.argv[1:4])
