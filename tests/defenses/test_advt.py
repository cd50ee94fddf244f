"""Adversarial training: the ``advt`` model-variant defense (tags, typed training options), the sdk interface every
model-variant defense declares, and the core's per-batch crafting hook."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

import sec4sr_core as sec4sr
from sec4sr_core.base.errors import ParameterError
from sec4sr_core.sdk import Defense, ModelVariantDefense, TrainingOptions, hookimpl, slug, variant_tag
from sec4sr_core.study.training import adversarial_hook, in_loop_defenses, train_variant
from sec4sr_core.study.variant_rows import build_row, is_variant_class
from sec4sr_core.testing import TinyModel
from sec4sr_plugins_defenses.advt import AdvT

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


# ---------------------------------------------------------------------------------------------------------------
# the advt defense
# ---------------------------------------------------------------------------------------------------------------


def test_marker_is_identity_and_names_the_variant():
    d = sec4sr.defense("advt")
    x = speechlike(2, 500)
    assert isinstance(d, ModelVariantDefense) and is_variant_class(AdvT)
    assert torch.equal(d(x), x) and d.model_variant and d.level == "wave"
    assert d.variant_tag() == variant_tag("pgd:epsilon=0.002,steps=10") == "advt-pgd_epsilon0.002_steps10"
    assert d.variant_tag("feco-o-k") == "advt-pgd_epsilon0.002_steps10+feco-o-k"
    opts = d.training_options("feco-o-k")
    assert isinstance(opts, TrainingOptions)
    assert opts == TrainingOptions(adversarial="pgd:epsilon=0.002,steps=10", defense="feco-o-k", ratio=0.5, eot=1)
    assert set(opts.as_kwargs()) <= set(inspect.signature(train_variant).parameters)
    assert "epochs" not in opts.as_kwargs()  # the backbone's own default applies
    custom = sec4sr.defense("advt:ratio=1,eot=3,epochs=2").training_options("")
    assert custom.as_kwargs() == {"adversarial": "pgd:epsilon=0.002,steps=10", "defense": None, "ratio": 1.0,
                                  "eot": 3, "epochs": 2}


def test_attack_parameters_inside_a_chain():
    d = sec4sr.defense("advt:attack=pgd:epsilon=0.004;steps=20")
    assert d.params.attack == "pgd:epsilon=0.004,steps=20"
    with pytest.raises(ParameterError, match="single attack"):
        AdvT(attack="pgd+qt")


def test_study_rows_split_advt_from_the_rest():
    from sec4sr_core.compose.factories import build_defenses

    chain = build_defenses("advt+feco-o-k")
    assert [d.name for d in chain] == ["advt", "feco"] and chain[1].level == "raw"
    row = build_row("qt:q=512+advt:attack=pgd:epsilon=0.004;steps=20,ratio=1")
    assert row.variant == "advt-pgd_epsilon0.004_steps20+qt_q512" and row.rest == "qt:q=512"
    assert [d.name for d in row.defenses] == ["qt"] and isinstance(row.variant_defense, AdvT)
    assert row.options == TrainingOptions(adversarial="pgd:epsilon=0.004,steps=20", defense="qt:q=512", ratio=1.0)
    assert build_row("advt").variant == "advt-pgd_epsilon0.002_steps10" and build_row("qt").variant is None
    with pytest.raises(ParameterError, match="two model-variant parts"):
        build_row("advt+qt+advt")


def test_the_plugin_imports_only_the_sdk():
    import sec4sr_plugins_defenses.advt as module

    tree = ast.parse(Path(module.__file__).read_text())
    names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {n for n in names if n.startswith("sec4sr_core")} == {"sec4sr_core.sdk"}


# ---------------------------------------------------------------------------------------------------------------
# the interface: declared, validated, refused when only pretended
# ---------------------------------------------------------------------------------------------------------------


class Pretender(Defense):
    """Sets the old undeclared attributes without subclassing the interface."""

    name = "test-pretender"
    model_variant = True

    def variant_tag(self, rest=""):
        return "pretend"

    def training_options(self, rest=""):
        return {"adversarial": "pgd"}

    def forward(self, x):
        return x


class BadTag(ModelVariantDefense):
    name = "test-badtag"

    def variant_tag(self, rest=""):
        return "../escape"

    def training_options(self, rest=""):
        return TrainingOptions()


class DictOptions(ModelVariantDefense):
    name = "test-dictoptions"

    def variant_tag(self, rest=""):
        return "dict-options"

    def training_options(self, rest=""):
        return {"adversarial": "pgd"}


class Plugin:
    @hookimpl
    def register_defenses(self, register):
        register(Pretender)
        register(BadTag)
        register(DictOptions)


@pytest.fixture
def variant_plugin():
    from sec4sr_core.plugins.manager import register_plugin, unregister_plugin

    register_plugin(Plugin(), "test-variant-interface")
    yield
    unregister_plugin("test-variant-interface")


def test_a_model_variant_not_declared_through_the_interface_is_refused(variant_plugin):
    with pytest.raises(ParameterError, match=r"'test-pretender'.*does not subclass sec4sr_core.sdk.ModelVariantDefense"):
        build_row("test-pretender+qt")
    with pytest.raises(ParameterError, match="test-pretender"):
        is_variant_class(Pretender)
    assert is_variant_class(BadTag) and not is_variant_class(type(sec4sr.defense("qt")))
    with pytest.raises(ParameterError, match=r"test-badtag.*'\.\./escape'"):
        build_row("test-badtag")
    with pytest.raises(ParameterError, match="test-dictoptions.*not sec4sr_core.sdk.TrainingOptions"):
        build_row("test-dictoptions+qt")


def test_the_interface_is_abstract_and_its_options_typed():
    class Half(ModelVariantDefense):
        name = "half"

        def variant_tag(self, rest=""):
            return "half"

    with pytest.raises(TypeError, match="training_options"):
        Half()
    with pytest.raises(ParameterError, match="sec4sr train: invalid parameter ratio"):
        TrainingOptions.checked("sec4sr train", ratio=0.0)
    with pytest.raises(ParameterError, match="eot"):
        TrainingOptions.checked(eot=0)
    with pytest.raises(ParameterError, match="unknown parameter"):
        TrainingOptions.checked(attack="pgd")
    assert TrainingOptions(adversarial=" ", defense="").as_kwargs()["adversarial"] is None
    assert variant_tag(None, "qt:q=512") == "natural+qt_q512" and variant_tag() == ""


def test_sdk_slug_is_the_composition_slug():
    from sec4sr_core.compose.factories import slug as compose_slug

    for spec in ["qt:q=512+at:snr=30", "feco-o-k", "folder:root=/a/b|c", "pgd:epsilon=0.002,steps=10", "é!", ""]:
        assert slug(spec) == compose_slug(spec) and slug(slug(spec)) == slug(spec)


# ---------------------------------------------------------------------------------------------------------------
# the core's crafting hook (sec4sr train --adversarial and study advt rows)
# ---------------------------------------------------------------------------------------------------------------


def test_hook_replaces_a_share_within_epsilon_in_eval_mode():
    torch.manual_seed(0)
    model = TinyClassifier().train()
    x = speechlike(4, 4000, seed=1)
    y = torch.tensor([0, 1, 2, 0])
    hook = adversarial_hook("pgd:epsilon=0.002,steps=3", "", ratio=0.5, seed=0)
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
    runs = [adversarial_hook("pgd:epsilon=0.002,steps=2", "advt+at:snr=30", ratio=1.0, eot=2, seed=s)(model, x, y)[0]
            for s in (0, 0, 1)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    assert not model.training
    # the advt part selects a backbone: the in-loop chain is the rest, as a spec or built
    built = adversarial_hook("pgd:epsilon=0.002,steps=2", in_loop_defenses("at:snr=30"), ratio=1.0, eot=2, seed=0)
    assert torch.equal(built(model, x, y)[0], runs[0])
    assert [d.name for d in in_loop_defenses("advt+at:snr=30")] == ["at"]
    # a non-differentiable in-loop defense gets BPDA: crafting still moves the examples
    xq, _ = adversarial_hook("pgd:epsilon=0.002,steps=2", "qt:q=64", ratio=1.0)(model, x, y)
    assert (xq - x).abs().max() > 0


def test_hook_validates():
    with pytest.raises(ParameterError, match="ratio"):
        adversarial_hook("pgd", ratio=0.0)
    with pytest.raises(ParameterError, match="eot"):
        adversarial_hook("pgd", eot=0)
    with pytest.raises(sec4sr.Sec4srError, match="unknown attack"):
        adversarial_hook("nope")
