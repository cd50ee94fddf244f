"""The contract kit checks what sec4sr expects of a defense; run with `pytest -p sec4sr_core.testing`."""

import torch

from sec4sr_example_defense import MuLaw


def test_contract(sec4sr_contract):
    sec4sr_contract.check_defense(MuLaw)
    sec4sr_contract.check_defense(MuLaw, {"bits": 4, "mu": 100.0})


def test_silence_stays_silent():
    x = torch.zeros(2, 1, 800)
    assert torch.equal(MuLaw()(x), x)


def test_error_shrinks_with_more_bits():
    x = torch.linspace(-1, 1, 4001).view(1, 1, -1)
    errors = [(MuLaw(bits=b)(x) - x).abs().max().item() for b in (4, 8, 12)]
    assert errors[0] > errors[1] > errors[2]
