"""Helpers of the core tests: a tiny, fast toy backbone and toy defenses, so that composition (BPDA, EOT, defense
chains, oracles) is tested in milliseconds, independently of any plugin distribution.

The toy model has three levels: ``wave`` (B, 1, T) -> ``frames`` (B, T/FRAME, FRAME) -> ``final`` (tanh of the
frames); its head is a fixed random linear map averaged over frames. Everything is differentiable and deterministic.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import torch
from pydantic import Field
from torch import nn

from sec4sr_core.sdk.interfaces import Defense, SpeakerModel, Task
from sec4sr_core.base.params import Params
from sec4sr_core.plugins.manager import register_plugin, unregister_plugin
from sec4sr_core.sdk.system import SpeakerSystem

FRAME = 16
DIM = 8
N_SPEAKERS = 3
TOY_T = 160  # samples of toy waveforms


class ToyModel(SpeakerModel):
    """Toy backbone: wave -> frames -> tanh(frames) -> linear mean embedding (DIM)."""

    name = "toy"
    levels = ("wave", "frames", "final")
    output = "embedding"
    tasks = (Task.CSI_E, Task.SV, Task.OSI)

    def __init__(self, params=None, **kwargs) -> None:
        super().__init__(params, **kwargs)
        g = torch.Generator().manual_seed(1234)
        self.proj = nn.Linear(FRAME, DIM)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(DIM, FRAME, generator=g))
            self.proj.bias.copy_(torch.randn(DIM, generator=g) * 0.1)

    def to_level(self, x: torch.Tensor, src: str, dst: str) -> torch.Tensor:
        i, j = self.levels.index(self.check_level(src)), self.levels.index(self.check_level(dst))
        if i > j:
            raise ValueError(f"cannot go back from {src} to {dst}")
        if i == 0 and j >= 1:
            x = x.reshape(x.shape[0], -1, FRAME)
        if i <= 1 and j == 2:
            x = torch.tanh(4 * x)
        return x

    def head(self, final: torch.Tensor) -> torch.Tensor:
        return self.proj(final).mean(dim=1)


class ScaleParams(Params):
    factor: float = Field(0.5, description="gain (unitless)")
    level: str = Field("wave", description="feature level the defense acts on")


class Scale(Defense):
    """Multiply the input by ``factor`` (differentiable, deterministic)."""

    name = "toy-scale"
    Params = ScaleParams
    acts_on = ("wave", "feature")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.params.factor


class ShiftParams(Params):
    offset: float = Field(0.1, description="added constant in input units")
    level: str = Field("wave", description="feature level the defense acts on")


class Shift(Defense):
    """Add ``offset`` to the input (differentiable, deterministic)."""

    name = "toy-shift"
    Params = ShiftParams
    acts_on = ("wave", "feature")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.params.offset


class NoiseParams(Params):
    sigma: float = Field(0.05, ge=0, description="standard deviation of the additive noise, amplitude units")


class Noise(Defense):
    """Additive Gaussian noise from the defense's seeded generator (randomized, differentiable)."""

    name = "toy-noise"
    Params = NoiseParams
    randomized = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.params.sigma * torch.randn(x.shape, generator=self.rng(x.device), device=x.device)


def toy_system(task: str = "csi-e", threshold: float | None = None) -> SpeakerSystem:
    model = ToyModel().eval()
    g = torch.Generator().manual_seed(99)
    enrolled = torch.randn(N_SPEAKERS, DIM, generator=g)
    return SpeakerSystem(model, task, [f"spk{i}" for i in range(N_SPEAKERS)], enrolled, threshold)


def toy_waves(b: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, 1, TOY_T, generator=g) * 2 - 1) * 0.5


@contextlib.contextmanager
def inline_plugin(plugin: Any, name: str, distribution: str | None = None) -> Iterator[Any]:
    """Register an inline plugin for the duration of a ``with`` block (always unregistered)."""
    register_plugin(plugin, name=name, distribution=distribution)
    try:
        yield plugin
    finally:
        unregister_plugin(name)


def sec4sr_cmd() -> list[str]:
    """The ``sec4sr`` console script next to the running interpreter (or ``python -m sec4sr_core.cli``)."""
    script = Path(sys.executable).with_name("sec4sr")
    return [str(script)] if script.exists() else [sys.executable, "-m", "sec4sr_core.cli"]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess with the session's ``SEC4SR_HOME`` (inherited) and capture its output."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(sec4sr_cmd() + list(args), capture_output=True, text=True, env=full_env, timeout=timeout)


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=timeout)


def assert_one_line_error(proc_or_text, *needles: str) -> str:
    """stderr is exactly one ``error: ...`` line containing every needle (case-insensitive), no traceback."""
    text = proc_or_text if isinstance(proc_or_text, str) else proc_or_text.stderr
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("notice:")]
    assert "Traceback" not in text, text
    assert len(lines) == 1, text
    assert lines[0].startswith("error: "), text
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])
    return lines[0]
