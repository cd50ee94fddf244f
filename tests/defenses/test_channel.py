"""The channel simulator: determinism per seed, one channel per row, the room stage against numpy's convolution,
the SNR of the background noise, the device's band limits, gradients, the fixed (shared) mode, the codec stage
and bad parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sec4sr_core.base.errors import ParameterError
from sec4sr_core.plugins.manager import get_registry

from sec4sr_plugins_defenses.channel import Channel, room_bank

from .helpers import speechlike


def flat(**kw) -> Channel:
    """A channel whose device response is flat (1 at every frequency), so only room, delay and noise act."""
    ch = Channel(**kw)
    ch.device_response = lambda draw, freqs: torch.ones(draw.room.shape[0], freqs.shape[0], dtype=freqs.dtype,
                                                        device=freqs.device)
    return ch


def test_registered_and_declared_randomized_and_differentiable():
    d = get_registry().build("defense", "channel:bank=2,snr_min=20,snr_max=20")
    assert isinstance(d, Channel) and d.randomized and d.differentiable and d.level == "wave"


def test_same_seed_same_channels_other_seed_other_channels(device):
    x = speechlike(3, 8000, device=device)
    a, b = Channel(bank=4), Channel(bank=4)
    a.seed(7, device)
    b.seed(7, device)
    ya, yb = a(x), b(x)
    assert torch.equal(ya, yb)
    assert ya.shape == x.shape and ya.device == x.device and float(ya.abs().max()) <= 1.0
    assert not torch.equal(a(x), ya)  # the stream moves on: the next call draws new channels
    b.seed(8, device)
    assert not torch.allclose(b(x), ya)


def test_every_row_gets_its_own_channel_and_shared_gives_one():
    x = speechlike(1, 8000).repeat(4, 1, 1)
    ch = Channel(bank=8)
    ch.seed(0)
    y = ch(x)
    assert not any(torch.allclose(y[0], y[i]) for i in range(1, 4))
    fixed = flat(bank=1, shared=True, snr_min=100, snr_max=100)
    fixed.seed(0)
    z = fixed(x)
    assert all(torch.allclose(z[0], z[i], atol=1e-4) for i in range(1, 4))  # one channel, noise at -100 dB only


def test_room_bank_is_a_function_of_rooms_seed():
    from sec4sr_plugins_defenses.channel import ChannelParams

    r1, h1 = room_bank(ChannelParams(bank=3, rooms_seed=5))
    r2, h2 = room_bank(ChannelParams(bank=3, rooms_seed=5, max_order=12))
    r3, h3 = room_bank(ChannelParams(bank=3, rooms_seed=6))
    assert r1 == r2 and torch.equal(h1, h2)
    assert r1[0] != r3[0] and not torch.allclose(h1, h3)
    assert h1.shape == (3, int(0.3 * 16000))
    assert torch.allclose(h1.pow(2).sum(dim=1), torch.ones(3), atol=1e-5)  # unit energy
    assert bool((h1.abs().argmax(dim=1) == 0).all())  # direct path at lag 0
    assert all(0.0 < r.rt60 < 5.0 for r in r1)


def test_room_and_delay_equal_numpy_convolution():
    x = speechlike(3, 4000, seed=2)
    ch = flat(bank=4, snr_min=100, snr_max=100, gain_db=0.0, shift_ms=30.0)
    ch.seed(3)
    draw = ch.draw(3)
    y = ch.apply(x, draw)
    _, rirs = room_bank(ch.params)
    for i in range(3):
        h = rirs[int(draw.room[i])].double().numpy()
        d = int(draw.shift[i])
        ref = np.convolve(x[i, 0].double().numpy(), h)[: 4000]
        ref = np.concatenate([np.zeros(d), ref])[: 4000]
        assert np.abs(y[i, 0].double().numpy() - ref).max() < 1e-3 * np.abs(ref).max() + 1e-5


def test_background_noise_at_the_drawn_snr():
    x = speechlike(4, 16000, seed=1)
    ch = flat(room_p=0.0, shift_ms=0.0, snr_min=10.0, snr_max=10.0, gain_db=0.0)
    ch.seed(0)
    y = ch(x)
    snr = 10 * torch.log10(x.pow(2).mean(dim=(1, 2)) / (y - x).pow(2).mean(dim=(1, 2)))
    assert torch.allclose(snr, torch.full_like(snr, 10.0), atol=0.05)


def test_device_response_band_limits_and_peaks():
    ch = Channel(eq_bands=1, eq_db=6.0, low_cut_max=200.0, high_cut_min=4000.0, gain_db=0.0)
    ch.seed(1)
    draw = ch.draw(5)
    freqs = torch.tensor([5.0, 1000.0, 7990.0])
    r = ch.device_response(draw, freqs)
    assert bool((r[:, 0] < 0.05).all())  # far below every high-pass corner
    assert bool((r[:, 2] < 0.8).all())  # above the low-pass corner (≥ 4 kHz, 4th order)
    centre = ch.device_response(draw, draw.eq_centre[:, 0].contiguous().view(-1))
    peak = torch.diagonal(centre)
    expect = 10 ** (draw.eq_gain_db[:, 0] / 20)
    hp = 1 / torch.sqrt(1 + (draw.low_cut / draw.eq_centre[:, 0]) ** 4)
    lp = 1 / torch.sqrt(1 + (draw.eq_centre[:, 0] / draw.high_cut) ** 8)
    assert torch.allclose(peak, expect * hp * lp, rtol=1e-4)


def test_gradient_flows_and_eot_over_the_channel_is_a_batch():
    x = speechlike(2, 8000).requires_grad_(True)
    ch = Channel(bank=4)
    ch.seed(0)
    ch(x.repeat(3, 1, 1)).pow(2).sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0


def test_codec_stage_is_straight_through():
    ch = Channel(bank=2, codec="opus", codec_p=1.0)
    ok, why = ch._codec.available()
    if not ok:
        pytest.skip(why)
    ch.seed(0)
    x = speechlike(2, 8000).requires_grad_(True)
    y = ch(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert float(x.grad.abs().sum()) > 0


@pytest.mark.parametrize("spec", ["channel:snr_min=30,snr_max=10", "channel:low_cut_max=4000,high_cut_min=3400",
                                  "channel:codec=gsm", "channel:bank=0", "channel:size_min=9,size_max=4"])
def test_bad_parameters_are_one_line_errors(spec):
    with pytest.raises(ParameterError):
        get_registry().build("defense", spec)


def test_bad_input_shape():
    with pytest.raises(ParameterError):
        Channel()(torch.zeros(2, 100))
