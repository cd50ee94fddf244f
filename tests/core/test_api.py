"""The public Python API: ``load_trials`` (trials as tensors) and ``wrap`` (any torch embedding net as a backbone)."""

from __future__ import annotations

import pytest
import torch

import sec4sr_core as sec4sr
from sec4sr_core.base.errors import ParameterError
from sec4sr_core.base.types import REJECT, Task
from sec4sr_core.compose.enroll import task_trials
from sec4sr_core.compose.factories import resolve_dataset
from sec4sr_core.sdk.audio import load_batch


class MeanPool(torch.nn.Module):
    """(B, T) -> (B, 8): framewise log-energies of 8 bands, averaged over time (deterministic, differentiable)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(1, 8, 64, stride=32)
        torch.nn.init.normal_(self.conv.weight, generator=torch.Generator().manual_seed(0))

    def forward(self, x):
        return torch.log1p(self.conv(x.unsqueeze(1)).pow(2)).mean(-1)


def test_public_names_are_lazy_exports():
    for name in ("load_trials", "wrap", "Trials", "WrappedModel"):
        assert name in sec4sr.__all__ and callable(getattr(sec4sr, name))


def test_load_trials_matches_the_run_trial_order():
    x, y, claims = sec4sr.load_trials("embedded", task="sv", limit=6, seed=3)
    ds = resolve_dataset("embedded")
    ref = task_trials(Task.SV, ds, ds.enrolled_speakers(), seed=3, limit=6)
    assert x.shape == (6, 1, 48000) and x.dtype == torch.float32 and float(x.abs().max()) <= 1.0
    torch.testing.assert_close(x, load_batch([u.path for u in ref.utterances], 48000))
    assert torch.equal(y, ref.labels) and torch.equal(claims, ref.claims)
    t = sec4sr.load_trials("embedded", task="csi-e", split="dev", length_s=1.0)
    assert t.claims is None and t.waves.shape[-1] == 16000
    assert set(t.labels.tolist()) <= set(range(len(ds.enrolled_speakers())))
    _, y_osi, _ = sec4sr.load_trials("embedded", task="osi")
    assert (y_osi == REJECT).any() and (y_osi >= 0).any()


@pytest.mark.parametrize("kwargs, needle", [
    ({"task": "nope"}, "task"), ({"split": "train"}, "split"), ({"limit": 0}, "limit"),
    ({"limit": True}, "limit"), ({"length_s": -1}, "length_s"), ({"device": "tpu"}, "device"),
])
def test_load_trials_refuses_bad_arguments(kwargs, needle):
    with pytest.raises(ParameterError, match=needle):
        sec4sr.load_trials("embedded", **kwargs)


def test_wrap_gives_a_backbone_for_all_four_tasks(sec4sr_home):
    net = MeanPool()
    model = sec4sr.wrap(net, name="meanpool")
    assert set(model.tasks) == set(Task) and model.levels == ("wave", "final") and model.name == "meanpool"
    x, _, _ = sec4sr.load_trials("embedded", task="csi-e", limit=4)
    with torch.no_grad():
        emb = model.embed(x)
    torch.testing.assert_close(emb, net(x[:, 0]))
    for task in ("csi-e", "csi-ne", "sv", "osi"):
        system = sec4sr.load_system(model, task=task)
        xt, _, claims = sec4sr.load_trials("embedded", task=task, limit=4, system=system)
        scores = system(xt, claims=claims)
        assert scores.shape == (4, 1 if task == "sv" else len(system.speakers))
        dec = system.decide(scores)
        assert dec.shape == (4,) and dec.dtype == torch.int64
    # enrollment went through the normal cached path, keyed by name and weight digest
    cached = sorted(p.name for p in (sec4sr_home / "systems").glob("meanpool-*"))
    assert len(cached) == 1
    with torch.no_grad():
        net.conv.bias.add_(1.0)  # other weights: another enrollment
    sec4sr.load_system(model, task="csi-e")
    assert len(list((sec4sr_home / "systems").glob("meanpool-*"))) == 2


def test_wrapped_model_has_gradients_and_is_attackable():
    model = sec4sr.wrap(MeanPool(), name="meanpool")
    system = sec4sr.load_system(model, task="csi-e")
    x, y, _ = sec4sr.load_trials("embedded", task="csi-e", limit=2)
    x = x.clone().requires_grad_(True)
    system(x).gather(1, y.view(-1, 1)).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    adv = sec4sr.attack("pgd", epsilon=0.002, steps=2)(system, x.detach(), y)
    assert adv.shape == x.shape and float((adv - x.detach()).abs().max()) <= 0.002 + 1e-6


def test_wrap_refuses_what_is_not_an_embedding_network():
    with pytest.raises(ParameterError, match="nn.Module"):
        sec4sr.wrap(lambda x: x)
    with pytest.raises(ParameterError, match="name"):
        sec4sr.wrap(MeanPool(), name="a/b")
    flat = sec4sr.wrap(torch.nn.Flatten(0))  # (B, T) -> (B·T,): not (B, D)
    with pytest.raises(ParameterError, match=r"\(B, D\)"):
        flat.embed(torch.zeros(2, 1, 160))
    with pytest.raises(ParameterError, match="SpeakerModel"):
        sec4sr.load_system(42)
