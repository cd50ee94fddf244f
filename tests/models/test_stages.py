"""Model = stages: every registered backbone declares its stages and the base class walks them.

For each backbone (every model the plugin registry lists, plus the example third-party backbone): every forward
(src, dst) pair works and equals the composition of single steps; every backwards or unknown pair raises
:class:`ParameterError` naming the model, the levels and their order. Then the declaration itself: ``levels``
follows from ``stages``, and a malformed table is refused when the class is defined.
"""

from __future__ import annotations

import importlib.util
from itertools import combinations
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sec4sr_core.base.errors import ParameterError
from sec4sr_core.plugins.manager import get_registry
from sec4sr_core.sdk import SpeakerModel

EXAMPLE = Path(__file__).resolve().parents[2] / "plugins" / "sec4sr-example-backbone" / "sec4sr_example_backbone"


def _example_backbone() -> type[SpeakerModel]:
    """The example plugin's MFCCStats, imported from its source folder (the plugin need not be installed)."""
    spec = importlib.util.spec_from_file_location("_stages_example_backbone", EXAMPLE / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.MFCCStats


def _backbones() -> dict[str, type[SpeakerModel]]:
    registry = get_registry()
    found = {name: registry.get("model", name).load() for name in registry.names("model")}
    found.setdefault("mfcc-stats", _example_backbone())
    return found


BACKBONES = _backbones()
NAMES = sorted(BACKBONES)
_MODELS: dict[str, SpeakerModel] = {}


def _model(name: str) -> SpeakerModel:
    """The backbone with default parameters and no weights, in eval mode (only its stages run here). ``onnx`` has
    no default graph: it gets the seeded feature fixture graph of tests/models/test_onnx.py."""
    if name not in _MODELS:
        torch.manual_seed(0)
        if name == "onnx":
            import tempfile

            from .test_onnx import feature_graph

            path = Path(tempfile.mkdtemp()) / "feat.onnx"
            feature_graph(path)
            _MODELS[name] = BACKBONES[name](path=str(path)).eval()
        else:
            _MODELS[name] = BACKBONES[name]().eval()
    return _MODELS[name]


def _wave() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 1, 6400, generator=g) * 0.1  # 0.4 s: enough frames for every front end


def test_every_shipped_backbone_is_covered():
    assert {"ge2e", "ivector", "xvector", "audionet", "ecapa", "mfcc-stats"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_backbone_declares_stages_and_levels_follow(name):
    cls = BACKBONES[name]
    assert "to_level" not in vars(cls), f"{name} should declare stages, not its own level walk"
    assert cls.levels == ("wave", *(level for level, _ in cls.stages))
    assert cls.levels[-1] == "final"


@pytest.mark.parametrize("name", NAMES)
def test_every_forward_pair_equals_the_composition_of_single_steps(name):
    m = _model(name)
    levels = m.levels
    with torch.no_grad():
        feats = {"wave": _wave()}
        for prev, level in zip(levels, levels[1:]):
            feats[level] = m.to_level(feats[prev], prev, level)
            assert feats[level].dim() == 3 and feats[level].shape[0] == 2
        for i, src in enumerate(levels):
            assert m.to_level(feats[src], src, src) is feats[src]
            for j in range(i + 1, len(levels)):
                dst = levels[j]
                composed = feats[src]
                for k in range(i, j):
                    composed = m.to_level(composed, levels[k], levels[k + 1])
                direct = m.to_level(feats[src], src, dst)
                assert torch.equal(direct, composed), (name, src, dst)
                assert torch.equal(direct, feats[dst]), (name, src, dst)


def _order(m: SpeakerModel) -> str:
    return " -> ".join(m.levels)


@pytest.mark.parametrize("name", NAMES)
def test_every_backwards_pair_raises_parameter_error_naming_model_levels_and_order(name):
    m = _model(name)
    x = torch.zeros(1, 4, 3)
    pairs = [(late, early) for early, late in combinations(m.levels, 2)]
    assert pairs
    for src, dst in pairs:
        with pytest.raises(ParameterError) as info:
            m.to_level(x, src, dst)
        msg = str(info.value)
        assert f"model {m.name!r}" in msg and f"from level {src!r} to {dst!r}" in msg, msg
        assert _order(m) in msg and "only go forward" in msg, msg


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25, deadline=None)
@given(unknown=st.text(max_size=12), data=st.data())
def test_every_unknown_level_raises_parameter_error_naming_model_level_and_order(name, unknown, data):
    m = _model(name)
    if unknown in m.levels:
        unknown += "?"
    known = data.draw(st.sampled_from(m.levels))
    x = torch.zeros(1, 4, 3)
    for src, dst in ((known, unknown), (unknown, known), (unknown, unknown)):
        with pytest.raises(ParameterError) as info:
            m.to_level(x, src, dst)
        msg = str(info.value)
        assert f"model {m.name!r} has no feature level {unknown!r}" in msg, msg
        assert f"from {src!r} to {dst!r}" in msg and _order(m) in msg, msg
        with pytest.raises(ParameterError, match="has no feature level"):
            m.embed(x, unknown)


# -- the declaration --------------------------------------------------------------------------------------------------


class Affine(SpeakerModel):
    """Three stages on (B, 1, T) waves: frames (B, T/4, 4), doubled, then the same tensor as ``final``."""

    name = "affine"
    stages = (("frames", "to_frames"), ("scaled", "double"), ("final", None))

    def to_frames(self, wave: torch.Tensor) -> torch.Tensor:
        return wave.reshape(wave.shape[0], -1, 4)

    def double(self, frames: torch.Tensor) -> torch.Tensor:
        return frames * 2.0

    def head(self, final: torch.Tensor) -> torch.Tensor:
        return final.mean(dim=1)


def test_levels_follow_from_stages_and_the_walk_runs_each_stage_once_in_order():
    assert Affine.levels == ("wave", "frames", "scaled", "final")
    m = Affine()
    calls = []

    class Traced(Affine):
        def to_frames(self, wave):
            calls.append("frames")
            return super().to_frames(wave)

        def double(self, frames):
            calls.append("scaled")
            return super().double(frames)

    x = torch.arange(8.0).view(1, 1, 8)
    t = Traced()
    assert torch.equal(t.to_level(x, "wave", "final"), x.view(1, 2, 4) * 2.0)
    assert calls == ["frames", "scaled"]  # a subclass' override of a stage method is the one that runs
    scaled = m.to_level(x, "wave", "scaled")
    assert m.to_level(scaled, "scaled", "final") is scaled  # a None stage names the same tensor again
    assert torch.equal(m.embed(x), m.embed(scaled, "scaled"))


@pytest.mark.parametrize("stages, why", [
    ((("frames", "to_frames"),), "end with 'final'"),
    ((("wave", "to_frames"), ("final", None)), "end with 'final'"),
    ((("frames", "to_frames"), ("frames", None), ("final", None)), "distinct"),
    ((("frames", "no_such_method"), ("final", None)), "names the method 'no_such_method'"),
    ((("frames",), ("final", None)), "pair"),
    (("final",), "pair"),
    ((), "end with 'final'"),
])
def test_a_malformed_stage_table_is_refused_when_the_class_is_defined(stages, why):
    with pytest.raises(TypeError, match=why):
        type("Bad", (SpeakerModel,), {"stages": stages, "to_frames": lambda self, w: w})


def test_levels_that_contradict_the_stages_are_refused():
    with pytest.raises(TypeError, match="declare the stages only"):
        type("Bad", (SpeakerModel,), {"stages": (("final", None),), "levels": ("wave", "raw", "final")})
    with pytest.raises(TypeError, match="inherits stages"):
        type("Bad", (Affine,), {"levels": ("wave", "final")})


def test_a_model_without_stages_says_what_to_declare():
    class Bare(SpeakerModel):
        name = "bare"

    with pytest.raises(NotImplementedError, match="set `stages`"):
        Bare().to_level(torch.zeros(1, 1, 8), "wave", "final")
    with pytest.raises(ParameterError, match="cannot go back"):
        Bare().to_level(torch.zeros(1, 1, 8), "final", "wave")
