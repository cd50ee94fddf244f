"""The contract kit checks what sec4sr expects of a backbone; run with `pytest -p sec4sr_core.testing`."""

import torch

from sec4sr_example_backbone import MFCCStats


def test_contract(sec4sr_contract):
    sec4sr_contract.check_model(MFCCStats)
    sec4sr_contract.check_model(MFCCStats, {"n_mels": 24, "n_mfcc": 12})


def test_bad_parameters_are_refused():
    import pytest
    from sec4sr_core.sdk import Sec4srError

    with pytest.raises(Sec4srError, match="n_mfcc"):
        MFCCStats(n_mels=20, n_mfcc=30)


def test_deltas_of_a_linear_ramp_are_its_slope():
    model = MFCCStats()
    ramp = torch.arange(20, dtype=torch.float32).view(1, 20, 1).repeat(1, 1, 3) * 0.5
    d = model.deltas(ramp)
    assert torch.allclose(d[:, 2:-2], torch.full_like(d[:, 2:-2], 0.5), atol=1e-6)


def test_levels_come_from_the_declared_stages_and_only_go_forward():
    import pytest
    from sec4sr_core.sdk import Sec4srError

    model = MFCCStats()
    assert MFCCStats.levels == ("wave", "mfcc", "final")
    x = torch.randn(2, 1, 4000) * 0.1
    mfcc = model.to_level(x, "wave", "mfcc")
    assert torch.equal(model.to_level(mfcc, "mfcc", "final"), model.to_level(x, "wave", "final"))
    with pytest.raises(Sec4srError, match="cannot go back from level 'final' to 'mfcc'.*wave -> mfcc -> final"):
        model.to_level(model.to_level(x, "wave", "final"), "final", "mfcc")
