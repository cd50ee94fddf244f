"""Budgets hold on disk: every saved adversarial WAV of a study lies inside its attack's ε-ball (measured before:
every row at ε = 0.002 saved L∞ 0.0020142 = 66 LSB > 65.5), and audio outside it is flagged."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sec4sr_core import Attack, Knowledge, hookimpl
from sec4sr_core.plugins.manager import register_plugin, unregister_plugin
from sec4sr_core.sdk.audio import INT16_SCALE, load_audio, load_batch
from sec4sr_core.study.budget import distance, quantize_within
from sec4sr_core.study.runner import Study, StudyConfig, study_id
from sec4sr_core.study.store import ResultStore


@given(st.integers(0, 2**31 - 1), st.sampled_from(["linf", "l2"]), st.floats(1e-4, 5e-3))
@settings(max_examples=60, deadline=None)
def test_quantized_audio_never_leaves_the_ball(seed, norm, eps):
    g = torch.Generator().manual_seed(seed)
    x = torch.round((torch.rand(3, 1, 400, generator=g) * 1.6 - 0.8) * INT16_SCALE) / INT16_SCALE  # a 16-bit file
    d = torch.rand(3, 1, 400, generator=g) * 2 - 1
    d = d * eps if norm == "linf" else d * (eps / d.flatten(1).norm(dim=1).view(-1, 1, 1))
    adv = (x + d).clamp(-1, 1)
    q = quantize_within(adv, x, (norm, eps))
    assert torch.equal(q, torch.round(q * INT16_SCALE) / INT16_SCALE)  # on the 16-bit grid
    assert bool((distance(q, x, norm) <= eps * (1 + 1e-6)).all())
    assert bool(((q - adv).abs() <= 1 / INT16_SCALE + 1e-9).all())  # at most one grid step from the crafted audio


def test_every_saved_wav_of_a_study_is_inside_its_epsilon_ball(tmp_path, one_thread):
    eps = 0.002
    out = tmp_path / "out"
    cfg = StudyConfig(attacks=[f"pgd:steps=2,epsilon={eps}", f"pgd:steps=2,epsilon={eps},norm=l2"], limit=4,
                      batch_size=4, length_s=0.5, metrics=["linf", "l2"], out=out, gradient_check=False)
    Study(cfg, progress=False).run()
    with ResultStore(out / "results.sqlite") as store:
        rows = store.rows("WHERE setting='non-adaptive'", study=study_id(cfg))
    assert len(rows) == 8
    n = int(0.5 * 16000)
    for r in rows:
        saved = load_audio(r["audio_path"]).reshape(1, 1, -1)
        benign = load_batch([next(p for p in _benign_paths() if p.stem == r["utterance"] or
                                  p.name == r["utterance"] or str(p).endswith(r["utterance"]))], n)
        norm = "l2" if "norm=l2" in r["attack"] else "linf"
        assert float(distance(saved, benign, norm)) <= eps * (1 + 1e-6), r["audio_path"]
        assert r["metrics"][norm] <= eps * (1 + 1e-6)
        assert not any(w["code"] == "over-budget" for w in r["warnings"])


def _benign_paths():
    from sec4sr_core.compose.factories import resolve_dataset

    return [u.path for u in resolve_dataset("embedded").split("test")]


class Greedy(Attack):
    """Declares an L∞ ball of ε but adds 2ε (a plugin that breaks its own budget)."""

    name = "test-greedy"
    knowledge = Knowledge.DECISIONS
    norm = "linf"

    from sec4sr_core.sdk import LinfBall as Params  # noqa: N814 - the mixin is a complete Params class

    def perturb(self, oracle, x, goal):
        return (x + 2 * self.params.epsilon).clamp(-1, 1)


class GreedyPlugin:
    @hookimpl
    def register_attacks(self, register):
        register(Greedy)


def test_a_plugin_attack_over_its_budget_is_flagged(tmp_path, one_thread):
    register_plugin(GreedyPlugin(), name="greedy-plugin")
    try:
        out = tmp_path / "out"
        cfg = StudyConfig(attacks=["test-greedy"], limit=2, batch_size=2, length_s=0.5, metrics=["linf"], out=out,
                          save_audio=False)
        summary = Study(cfg, progress=False).run()
    finally:
        unregister_plugin("greedy-plugin")
    cell = next(r for r in summary["results"] if r["attack"] == "test-greedy")
    assert cell["warnings"].get("over-budget") == 2
    assert any("declared budget" in m for m in cell["warning_messages"])
