"""Activations and weight-norm folding against their definitions in NeMo and torch."""
import torch
from torch import nn

from nanocodec.convert.keymap import map_state_dict
from nanocodec.nn.activations import HalfSnake
from nanocodec.presets import PRESETS


def test_half_snake_odd_split():
    act = HalfSnake(3)  # NeMo: snake on C//2 = 1 channel, leaky ReLU (slope 0.01) on 2
    assert act.alpha.shape == (1, 1, 1)
    with torch.no_grad():
        act.alpha.fill_(1.7)
    x = torch.linspace(-3, 3, 30).view(1, 3, 10)
    y = act(x)
    a = torch.tensor(1.7)
    assert torch.equal(y[:, :1], x[:, :1] + (a + 1e-9).reciprocal() * torch.sin(a * x[:, :1]).pow(2))
    assert torch.equal(y[:, 1:], torch.where(x[:, 1:] >= 0, x[:, 1:], 0.01 * x[:, 1:]))


def test_folding_is_bitwise_torch_parametrized_weight_norm():
    """NeMo's convs are nn.utils.parametrizations.weight_norm modules: fold must equal module.weight."""
    torch.manual_seed(0)
    conv = nn.utils.parametrizations.weight_norm(nn.Conv1d(16, 24, 7))
    transposed = nn.utils.parametrizations.weight_norm(nn.ConvTranspose1d(24, 12, 14, stride=7, groups=12))
    with torch.no_grad():
        conv.parametrizations.weight.original0.mul_(torch.rand(24, 1, 1) * 3)
        transposed.parametrizations.weight.original0.mul_(torch.rand(24, 1, 1) * 3)
    nemo_state = {}
    for name, mod in (("audio_decoder.pre_conv.conv", conv), ("audio_decoder.up_sample_conv_layers.0.conv", transposed)):
        for k, v in mod.state_dict().items():
            nemo_state[f"{name}.{k}"] = v
    cfg = PRESETS["nanocodec-22khz-0.6kbps-12.5fps"].config()
    mapped = map_state_dict(nemo_state, cfg).state_dict
    assert torch.equal(mapped["decoder.pre_conv.weight"], conv.weight)
    assert torch.equal(mapped["decoder.up_convs.0.weight"], transposed.weight)
    assert torch.equal(mapped["decoder.pre_conv.bias"], conv.bias)
