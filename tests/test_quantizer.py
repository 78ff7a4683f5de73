"""GroupFSQ against the FSQ definition in NeMo (formulas on the reference page, §2.3 and §6)."""
import math

import pytest
import torch

from nanocodec.config import QuantizerConfig
from nanocodec.presets import PRESETS
from nanocodec.quantizer import GroupFSQ

VARIANTS = sorted({tuple(p.num_levels_per_group) for p in PRESETS.values()} | {(8, 5, 5, 5)})


def closed_form_codebook(levels):
    """codebook[i][d] = (((i // base_d) % L_d) - L_d//2) / (L_d//2): the documented inverse."""
    base = [math.prod(levels[:d]) for d in range(len(levels))]
    idx = torch.arange(math.prod(levels))
    return torch.stack([((idx // b) % n - n // 2).double() / (n // 2) for b, n in zip(base, levels)], dim=1)


@pytest.mark.parametrize("levels", VARIANTS)
def test_decode_every_code_matches_closed_form(levels):
    q = GroupFSQ(QuantizerConfig(num_groups=2, num_levels_per_group=list(levels)))
    n = math.prod(levels)
    tokens = torch.arange(n).view(1, 1, n).repeat(1, 2, 1)
    latents = q.decode(tokens)  # [1, 2*D, n]
    expected = closed_form_codebook(levels).T.float()  # [D, n]
    assert torch.equal(latents[0, : len(levels)], expected)
    assert torch.equal(latents[0, len(levels):], expected)


@pytest.mark.parametrize("levels", VARIANTS)
def test_encode_inverts_decode_on_every_code(levels):
    """Latents placed on each code (through atanh of the FSQ bound) encode back to it."""
    cfg = QuantizerConfig(num_groups=1, num_levels_per_group=list(levels))
    q = GroupFSQ(cfg)
    n = math.prod(levels)
    codes = closed_form_codebook(levels)  # [n, D] in [-1, 1]
    lv = torch.tensor(levels, dtype=torch.float64)
    half = torch.floor(lv / 2)
    scale = (lv - 1) / 2 * (1 - cfg.eps)
    offset = torch.where(lv % 2 == 0, 0.5, 0.0)
    shift = torch.tan(offset / scale)
    # aim at each integer code; the outermost ones sit just inside the open tanh bound
    target = (codes * half).clamp(-scale - offset + 0.01, scale - offset - 0.01)
    x = torch.atanh((target + offset) / scale) - shift
    tokens = q.encode(x.T.unsqueeze(0).float())
    assert torch.equal(tokens[0, 0], torch.arange(n, dtype=torch.int32))


def test_rounding_is_half_to_even():
    q = GroupFSQ(QuantizerConfig(num_groups=1, num_levels_per_group=[9, 9]))
    # dim 0 carries ties, dim 1 stays at 0; half-to-even: -3.5->-4, -2.5->-2, -0.5->0, 0.5->0, 1.5->2, 2.5->2
    ties = torch.tensor([-3.5, -2.5, -0.5, 0.5, 1.5, 2.5])
    compressed = torch.stack([ties, torch.zeros(6)]).view(1, 1, 2, 6)
    tokens = q.tokens_from_prerounding(compressed)[0, 0]
    expected_codes = torch.tensor([-4, -2, 0, 0, 2, 2])
    assert torch.equal(tokens, (expected_codes + 4 + 9 * 4).to(torch.int32))


def test_groups_are_channel_blocks_and_lengths_mask():
    q = GroupFSQ(QuantizerConfig(num_groups=4, num_levels_per_group=[9, 8, 8, 7]))
    torch.manual_seed(0)
    latents = torch.randn(2, 16, 5)
    tokens = q.encode(latents, torch.tensor([5, 3]))
    assert tokens.dtype == torch.int32 and tokens.shape == (2, 4, 5)
    assert torch.all(tokens[1, :, 3:] == 0) and tokens[1, :, :3].ne(0).any()
    for g in range(4):  # group g quantizes channels [4g, 4g+4) alone
        alone = GroupFSQ(QuantizerConfig(num_groups=1, num_levels_per_group=[9, 8, 8, 7])).encode(latents[:, 4 * g : 4 * g + 4])
        assert torch.equal(tokens[0, g], alone[0, 0])
    assert int(tokens.max()) < 4032
