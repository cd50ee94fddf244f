"""Adversarial training: the ``advt`` marker (tags, options, chains) and the per-batch crafting hook."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import sec4sr_core as sec4sr
from sec4sr_core.errors import ParameterError
from sec4sr_core.testing import TinyModel
from sec4sr_plugins_defenses.advt import AdvT, make_batch_hook, split_chain

from .helpers import speechlike


class TinyClassifier(TinyModel):
    """TinyModel with a training classifier over 3 classes; records the mode of every forward."""

    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(self.DIM, 3)
        self.class_ids = ["a", "b", "c"]
        self.modes: list[bool] = []

    def to_level(self, x, src, dst):
        self.modes.append(self.training)
        return super().to_level(x, src, dst)

    def train_logits(self, final):
        return self.classifier(self.head(final))


def test_marker_is_identity_and_names_the_variant():
    from sec4sr_core.training import train_variant, variant_tag

    d = sec4sr.defense("advt")
    x = speechlike(2, 500)
    assert torch.equal(d(x), x) and d.model_variant and d.level == "wave"
    assert d.variant_tag() == variant_tag("pgd:epsilon=0.002,steps=10") == "advt-pgd_epsilon0.002_steps10"
    assert d.variant_tag("feco-o-k") == "advt-pgd_epsilon0.002_steps10+feco-o-k"
    opts = d.training_options("feco-o-k")
    assert opts["adversarial"] == "pgd:epsilon=0.002,steps=10" and opts["defense"] == "feco-o-k"
    assert set(opts) <= set(inspect.signature(train_variant).parameters)


def test_attack_parameters_inside_a_chain():
    d = sec4sr.defense("advt:attack=pgd:epsilon=0.004;steps=20")
    assert d.params.attack == "pgd:epsilon=0.004,steps=20"
    with pytest.raises(ParameterError, match="single attack"):
        AdvT(attack="pgd+qt")
    assert split_chain("advt:ratio=1+feco-o-k+qt") == ("advt:ratio=1", "feco-o-k+qt")
    assert split_chain("qt") == (None, "qt")
    with pytest.raises(ParameterError, match="more than once"):
        split_chain("advt+qt+advt")


def test_chain_with_advt_builds():
    from sec4sr_core.runner import build_defenses

    chain = build_defenses("advt+feco-o-k")
    assert [d.name for d in chain] == ["advt", "feco"] and chain[1].level == "raw"


def test_hook_replaces_a_share_within_epsilon_in_eval_mode():
    torch.manual_seed(0)
    model = TinyClassifier().train()
    x = speechlike(4, 4000, seed=1)
    y = torch.tensor([0, 1, 2, 0])
    hook = make_batch_hook("pgd:epsilon=0.002,steps=3", "", ratio=0.5, seed=0)
    model.modes.clear()
    xa, ya = hook(model, x, y)
    assert model.training  # mode restored
    assert model.modes and not any(model.modes)  # every crafting forward ran in eval mode
    assert all(p.grad is None for p in model.parameters())  # crafting leaves no parameter gradient
    changed = (xa - x).flatten(1).abs().amax(dim=1) > 0
    assert int(changed.sum()) == 2 and torch.equal(ya, y)
    assert (xa - x).abs().max() <= 0.002 + 1e-6 and xa.abs().max() <= 1
    # adversarial: the training loss on the replaced examples goes up
    model.eval()
    with torch.no_grad():
        ce = nn.functional.cross_entropy
        before = ce(model.train_logits(model.to_level(x[changed], "wave", "final")), y[changed])
        after = ce(model.train_logits(model.to_level(xa[changed], "wave", "final")), y[changed])
    assert after > before


def test_hook_is_seeded_and_crafts_through_in_loop_defenses():
    model = TinyClassifier().eval()
    x = speechlike(4, 4000, seed=2)
    y = torch.tensor([0, 1, 2, 1])
    runs = [make_batch_hook("pgd:epsilon=0.002,steps=2", "advt+at:snr=30", ratio=1.0, eot=2, seed=s)(model, x, y)[0]
            for s in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    assert not model.training
    # a non-differentiable in-loop defense gets BPDA: crafting still moves the examples
    xq, _ = make_batch_hook("pgd:epsilon=0.002,steps=2", "qt:q=64", ratio=1.0)(model, x, y)
    assert (xq - x).abs().max() > 0


def test_hook_validates():
    with pytest.raises(ParameterError, match="ratio"):
        make_batch_hook(ratio=0.0)
    with pytest.raises(sec4sr.Sec4srError, match="unknown attack"):
        make_batch_hook("nope")
