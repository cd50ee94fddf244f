"""A tiny differentiable speaker system for fast attack tests (the GE2E tests are few and small)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sec4sr_core.sdk.interfaces import SpeakerModel, Task
from sec4sr_core.sdk.system import DefendedSystem, SpeakerSystem

T = 1600  # 0.1 s
S = 4


class ToyModel(SpeakerModel):
    """Strided conv front-end -> mean pooling -> linear embedding (deterministic, seeded weights)."""

    name = "toy"
    levels = ("wave", "final")
    tasks = (Task.CSI_E, Task.SV, Task.OSI)

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv1d(1, 8, 64, stride=32)
        self.lin = nn.Linear(8, 16)
        with torch.no_grad():
            for prm in self.parameters():
                prm.copy_(torch.randn(prm.shape, generator=g) * 0.5)

    def to_level(self, x, src, dst):
        if src == dst:
            return x
        return torch.tanh(self.conv(x * 20)).transpose(1, 2)

    def head(self, final):
        return self.lin(final.mean(dim=1))


def speech_like(n: int, seed: int, t: int = T) -> torch.Tensor:
    """(n, 1, t) band-limited noise in [-0.3, 0.3] with a per-utterance spectral tilt ("speaker")."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, t, generator=g)
    k = torch.randint(2, 12, (n, 1, 1), generator=g).float()
    kernel = torch.ones(1, 1, 9) / 9
    x = torch.nn.functional.conv1d(x, kernel, padding=4) * (1 + torch.sin(torch.arange(t) / k))
    return (0.3 * x / x.abs().amax(dim=-1, keepdim=True)).clamp(-1, 1)


def toy_system(task: str = "csi-e") -> DefendedSystem:
    model = ToyModel().eval()
    enroll = speech_like(S * 3, seed=1)
    emb = model.embed(enroll).detach().view(S, 3, -1).mean(dim=1)
    sys_ = SpeakerSystem(model, task, [f"s{i}" for i in range(S)], emb, threshold=None)
    if Task(task).has_threshold:
        with torch.no_grad():
            sc = sys_.model.score(model.embed(speech_like(16, seed=2)), emb)
        sys_.threshold = float(sc.max(dim=1).values.median())
    return DefendedSystem(sys_)


@pytest.fixture(scope="module")
def toy():
    return toy_system("csi-e")


@pytest.fixture(scope="module")
def toy_batch(toy):
    """Six utterances labelled with the toy system's own benign decisions (benign accuracy 100 %)."""
    x = speech_like(6, seed=3)
    with torch.no_grad():
        y = toy.decide(toy(x))
    return x, y
