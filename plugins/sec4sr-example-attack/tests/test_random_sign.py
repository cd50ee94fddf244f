"""The contract kit checks what sec4sr expects of an attack; run with `pytest -p sec4sr_core.testing`."""

from sec4sr_example_attack import RandomSign


def test_contract(sec4sr_contract):
    sec4sr_contract.check_attack(RandomSign, {"trials": 6, "batch": 3})
    sec4sr_contract.check_attack(RandomSign, {"trials": 4, "epsilon": 0.05}, targeted=True)


def test_a_large_budget_fools_the_tiny_system(sec4sr_contract):
    system = sec4sr_contract.tiny_system()
    x = sec4sr_contract.waves(4)
    attack = RandomSign(epsilon=0.5, trials=30)
    adv = attack(system, x)
    assert (adv - x).abs().max() <= 0.5 + 1e-6
    assert bool(attack.last_result.success.any())
    assert int(attack.last_result.queries.min()) >= 2  # the first decision and the final check at least
