"""Budgets in dB SNR (``snr_db``): per-utterance ε or radius from each utterance's loudness, exclusive with an
explicit ε, on every L∞/L2 attack, carried to the 16-bit quantisation of ``sec4sr_core.study.budget`` so that saved
audio keeps SNR ≥ snr_db, and through the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sec4sr_core
from sec4sr_core.base.errors import ParameterError
from sec4sr_core.cli import main
from sec4sr_core.plugins.manager import get_registry
from sec4sr_core.sdk.audio import quantize_16bit
from sec4sr_core.study.budget import declared_budget, over_budget, quantize_within

from .conftest import speech_like, toy_system

#: every bounded attack with tiny settings
BOUNDED = {
    "fgsm": {}, "pgd": {"steps": 2}, "cwinf": {"steps": 2}, "apgd": {"steps": 3},
    "pgd-nes": {"steps": 1, "samples": 4, "samples_batch": 4},
    "fakebob": {"max_iter": 2, "samples": 4, "samples_batch": 4}, "siren": {"max_epoch": 1, "max_iter": 1,
                                                                            "n_particles": 2},
    "square": {"max_iter": 4}, "uap": {"steps": 1, "period": 0},
}


def snr(x: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Per-utterance SNR (B,) in dB, float64."""
    x, d = x.double().flatten(1), (adv.double() - x.double()).flatten(1)
    return 20 * torch.log10(x.norm(dim=1) / d.norm(dim=1).clamp(min=1e-300))


@pytest.fixture(scope="module")
def toy_sys():
    return toy_system("csi-e")


def _loudness(x: torch.Tensor, gains_db) -> torch.Tensor:
    """``x`` scaled per utterance by ``gains_db`` and put on the 16-bit grid (as read from a file)."""
    g = torch.tensor([10 ** (d / 20) for d in gains_db]).view(-1, 1, 1)
    return quantize_16bit((x * g).clamp(-1, 1))


def test_snr_db_is_exclusive_with_an_explicit_epsilon():
    with pytest.raises(ParameterError, match="epsilon.*snr_db|snr_db.*epsilon"):
        sec4sr_core.attack("pgd", epsilon=0.004, snr_db=30)
    with pytest.raises(ParameterError, match="not both"):
        get_registry().build("attack", "pgd:epsilon=0.01,snr_db=20")
    atk = get_registry().build("attack", "pgd-10:snr_db=30")  # the preset's ε is the default: snr_db replaces it
    assert atk.params.snr_db == 30 and atk.params.epsilon is None and atk.params.steps == 10
    assert sec4sr_core.attack("pgd").params.epsilon == 0.002  # no snr_db: the default ε


@pytest.mark.parametrize("name", sorted(BOUNDED))
def test_every_bounded_attack_takes_snr_db_and_keeps_each_utterances_budget(toy_sys, name):
    x = _loudness(speech_like(3, seed=3), [-6, -20, -34])
    with torch.no_grad():
        y = toy_sys.decide(toy_sys(x))
    atk = sec4sr_core.attack(name, snr_db=20, **BOUNDED[name])
    adv = atk(toy_sys, x, y, crafting=speech_like(3, seed=9) if name == "uap" else None)
    norm, eps = declared_budget(atk)
    rms = x.double().flatten(1).pow(2).mean(dim=1).sqrt()
    assert norm == "linf" and eps.shape == (3,)
    assert torch.allclose(eps, rms * 10 ** (-20 / 20), rtol=1e-5)  # louder utterance, larger ε
    linf = (adv.double() - x.double()).flatten(1).abs().amax(dim=1)
    assert bool((linf <= eps * (1 + 1e-5) + 1e-7).all()), (linf.tolist(), eps.tolist())
    assert bool((snr(x, adv) >= 20 - 1e-4).all())


@settings(max_examples=12, deadline=None)
@given(gains=st.lists(st.floats(-45, -3), min_size=2, max_size=3), snr_db=st.floats(5, 50),
       norm=st.sampled_from(["linf", "l2"]), seed=st.integers(0, 10))
def test_snr_holds_after_16_bit_quantisation_for_any_loudness(toy_sys, gains, snr_db, norm, seed):
    x = _loudness(speech_like(len(gains), seed=seed), gains)
    with torch.no_grad():
        y = toy_sys.decide(toy_sys(x))
    atk = sec4sr_core.attack("pgd", norm=norm, snr_db=snr_db, steps=2, restarts=1)
    adv = atk(toy_sys, x, y)
    budget = declared_budget(atk)
    assert budget[0] == norm
    saved = quantize_within(adv, x, budget)  # what the study writes to disk
    assert not bool(over_budget(saved, x, budget).any())
    assert bool((snr(x, saved) >= snr_db - 1e-4).all()), (snr(x, saved).tolist(), snr_db)


def test_l2_radius_and_steps_scale_per_utterance(toy_sys):
    x = _loudness(speech_like(2, seed=4), [-10, -30])
    p = sec4sr_core.attack("pgd", norm="l2", snr_db=25).params
    r = p.budget(x)
    assert torch.allclose(r.double(), x.double().flatten(1).norm(dim=1) * 10 ** (-25 / 20), rtol=1e-5)
    assert torch.allclose(p.steps_for(r), r * 0.2)  # α = 0.0004 keeps its ratio to ε = 0.002
    q = sec4sr_core.attack("pgd", epsilon=0.004).params
    assert q.steps_for(q.budget(x)).tolist() == pytest.approx([0.0004, 0.0004])  # fixed L∞: the step itself


def test_a_per_utterance_budget_flags_only_the_utterance_over_its_own_bound():
    x = _loudness(speech_like(2, seed=5), [-6, -30])
    eps = torch.tensor([0.01, 0.001], dtype=torch.float64)
    adv = x.clone()
    adv[0] += 0.005  # inside 0.01
    adv[1] += 0.005  # outside 0.001
    assert over_budget(adv, x, ("linf", eps)).tolist() == [False, True]
    saved = quantize_within(x + 0.00099 * torch.sign(torch.randn_like(x)), x, ("linf", eps))
    assert not bool(over_budget(saved, x, ("linf", eps)).any())


def test_cli_run_with_an_snr_budget(tmp_path, capsys, ge2e_system):
    argv = ["run", "--attack", "pgd-10:snr_db=30,steps=2", "--limit", "2", "--batch-size", "2", "--length", "1",
            "--quiet", "--json", "--out", str(tmp_path), "--metric", "snr"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    cell = next(c for c in doc["results"] if c["attack"] == "pgd-10:snr_db=30,steps=2")
    assert cell["n"] == 2
    text = json.dumps(cell)
    assert "snr" in text
    rc = main(["run", "--attack", "pgd:epsilon=0.01,snr_db=30", "--limit", "1", "--out", str(tmp_path / "b"),
               "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "snr_db" in err and "Traceback" not in err
