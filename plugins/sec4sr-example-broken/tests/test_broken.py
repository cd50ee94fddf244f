"""These tests FAIL on purpose: `pytest -p sec4sr_core.testing plugins/sec4sr-example-broken/tests` shows what the
contract kit reports for each broken component."""

import pytest

from sec4sr_example_broken import BatchNorm, OverBudget, Peek, Truncate, UnseededNoise


@pytest.mark.parametrize("cls", [UnseededNoise, Truncate], ids=lambda c: c.name)
def test_defense_contract(sec4sr_contract, cls):
    sec4sr_contract.check_defense(cls)


@pytest.mark.parametrize("cls", [OverBudget, Peek], ids=lambda c: c.name)
def test_attack_contract(sec4sr_contract, cls):
    sec4sr_contract.check_attack(cls)


def test_model_contract(sec4sr_contract):
    sec4sr_contract.check_model(BatchNorm)
