"""Evaluation over unseen channels: does an adversarial example survive rooms, devices and noise it was not crafted
for? (Qin et al. 2019; arXiv 2105.09022.)

Each adversarial example (and, as a baseline, each benign one) is passed through ``N`` *unseen* channels and judged
on the undefended system. Channel ``j`` is the channel defense's spec (default ``channel``) with

* ``rooms_seed = UNSEEN_ROOMS_SEED + j``, ``bank = 1``: a room of its own, from a rooms seed that crafting never
  uses (crafting specs with ``rooms_seed >= UNSEEN_ROOMS_SEED`` are refused), and
* ``shared = true``: one realisation (room, delay, device, gain, SNR, noise colour) for every example — a fixed
  channel — drawn from a generator seeded with ``batch_seed(seed, "unseen-channel", j)`` before every batch, so
  the channel is the same for every batch and every crafting method compared.

A randomized wave-level defense without those parameters (e.g. ``at``) is evaluated the same way with its own
parameters and the per-channel seeds.

Two crafting methods are compared on the same trials (:func:`channel_setting`): **plain** — the attack on the
undefended system, as ``sec4sr run`` crafts a non-adaptive cell — and **EOT** — the attack on the system behind
the channel defense with ``eot`` draws, as ``sec4sr run --defense channel --adaptive --eot N`` crafts it (every
draw a different channel of the crafting bank, rooms seed 0). Success over channels is the share of
(example, channel) pairs meeting the goal, with a Wilson 95 % interval over the pairs (pairs of one example are
correlated, so read it as a lower bound on the uncertainty); the share of examples that succeed on *every* channel
(Wilson over examples) and each channel's rate are reported beside it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from sec4sr_core.base.errors import ParameterError
from sec4sr_core.compose.targets import batch_seed
from sec4sr_core.plugins.manager import get_registry
from sec4sr_core.sdk.interfaces import Defense
from sec4sr_core.sdk.losses import success as goal_met
from sec4sr_core.sdk.system import DefendedSystem, SpeakerSystem
from sec4sr_core.study.config import StudyConfig
from sec4sr_core.study.craft import adaptive_seed, bench, craft, evaluate, non_adaptive_seed
from sec4sr_core.study.stats import wilson

__all__ = ["UNSEEN_ROOMS_SEED", "ChannelSetting", "channel_setting", "over_channels", "summarize_success",
           "unseen_channels"]

#: rooms seeds from here on are reserved for the unseen evaluation channels
UNSEEN_ROOMS_SEED = 1_000_000


def unseen_channels(spec: str = "channel", n: int = 20) -> list[Defense]:
    """``n`` unseen evaluation channels built from ``spec`` (see the module docstring); the spec must name a
    randomized wave-level defense."""
    if n < 1:
        raise ParameterError(f"the channel evaluation needs at least one channel, got {n}")
    reg = get_registry()
    cls, params, _ = reg.resolve("defense", spec)
    check_crafting_spec(spec)
    fields = cls.Params.model_fields
    out = []
    for j in range(n):
        extra: dict[str, Any] = {}
        if "rooms_seed" in fields:
            extra["rooms_seed"] = UNSEEN_ROOMS_SEED + j
        if "bank" in fields:
            extra["bank"] = 1
        if "shared" in fields:
            extra["shared"] = True
        out.append(reg.build("defense", spec, **extra))
    return out


def check_crafting_spec(spec: str) -> None:
    """Refuse a channel spec that is not a randomized wave-level defense, or whose rooms overlap the unseen ones."""
    cls, params, _ = get_registry().resolve("defense", spec)
    if not getattr(cls, "randomized", False) or "wave" not in getattr(cls, "acts_on", ("wave",)):
        raise ParameterError(f"defense {spec!r} is not a randomized waveform defense; a channel evaluation needs one "
                             f"(e.g. channel)")
    rooms = getattr(params, "rooms_seed", None)
    if rooms is not None and rooms >= UNSEEN_ROOMS_SEED:
        raise ParameterError(f"{spec!r}: rooms_seed {rooms} is reserved for the unseen evaluation channels "
                             f"(use one below {UNSEEN_ROOMS_SEED})")


@torch.no_grad()
def over_channels(system: SpeakerSystem | DefendedSystem, x: torch.Tensor, y: torch.Tensor, targeted: bool,
                  channels: Sequence[Defense], seed: int = 0, claims: torch.Tensor | None = None) -> torch.Tensor:
    """Success (C, B) bool of the waveforms ``x`` (B, 1, T) through each of the C ``channels`` on ``system``, for
    the goal ``y`` (B,) (labels, or targets when ``targeted``). Channel ``j`` is seeded with
    ``batch_seed(seed, "unseen-channel", j)`` before it runs, so it is the same for every call."""
    out = []
    for j, ch in enumerate(channels):
        ch.seed(batch_seed(seed, "unseen-channel", j), x.device)
        scores = system(ch(x), claims=claims)
        out.append(goal_met(system.decide(scores).cpu(), y.cpu(), targeted))
    return torch.stack(out) if out else torch.zeros(0, x.shape[0], dtype=torch.bool)


def summarize_success(success: torch.Tensor) -> dict[str, Any]:
    """Aggregates of a (C, B) success matrix: over pairs (Wilson), on every channel (Wilson over examples), per
    channel and per example."""
    c, b = success.shape
    k = int(success.sum())
    every = int(success.all(dim=0).sum()) if c else 0
    return {
        "channels": c, "examples": b,
        "success": k / (c * b) if c * b else None, "ci": wilson(k, c * b),
        "all_channels": every / b if b else None, "all_channels_ci": wilson(every, b),
        "per_channel": success.double().mean(dim=1).tolist(),
        "per_example": success.double().mean(dim=0).tolist(),
    }


@dataclass
class ChannelSetting:
    """The outcome of :func:`channel_setting`: per method, the digital success (B,) and over channels (C, B)."""

    attack: str
    task: str
    eot_spec: str
    eot: int
    utterances: list[str]
    digital: dict[str, torch.Tensor]  #: method -> (B,) bool success on the system itself (no channel)
    channels: dict[str, torch.Tensor]  #: method -> (C, B) bool success through the unseen channels
    seconds: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"attack": self.attack, "task": self.task, "eot_spec": self.eot_spec, "eot": self.eot,
                               "utterances": self.utterances, "seconds": self.seconds, "methods": {}}
        for m, s in self.channels.items():
            d = self.digital[m]
            out["methods"][m] = {"digital": {"success": float(d.double().mean()) if d.numel() else None,
                                             "ci": wilson(int(d.sum()), d.numel())},
                                 "over_channels": summarize_success(s)}
        return out

    def table(self) -> str:
        def pct(v: float | None, ci: Any) -> str:
            if v is None:
                return "-"
            return f"{100 * v:.1f} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"

        doc = self.as_dict()
        c = next(iter(self.channels.values())).shape[0] if self.channels else 0
        head = ["crafting", "no channel", f"over {c} unseen channels", "on every channel", "time s"]
        rows = []
        for m, v in doc["methods"].items():
            oc = v["over_channels"]
            rows.append([m, pct(v["digital"]["success"], v["digital"]["ci"]), pct(oc["success"], oc["ci"]),
                         pct(oc["all_channels"], oc["all_channels_ci"]), f"{self.seconds.get(m, 0.0):.1f}"])
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        lines = [f"{self.attack} on {self.task}, {len(self.utterances)} trial(s): attack success % [Wilson 95 %] "
                 f"(benign = the channel alone)", fmt.format(*head), fmt.format(*("-" * w for w in widths))]
        return "\n".join(lines + [fmt.format(*r) for r in rows])


def channel_setting(model: str, attack: str, config: StudyConfig, eot_spec: str = "channel", eot: int = 8,
                    n_channels: int = 20, channel_spec: str | None = None, progress: Any = None) -> ChannelSetting:
    """Craft ``attack`` plainly and with EOT over ``eot_spec`` (``eot`` draws) on ``model`` under ``config``, and
    judge benign, plain and EOT examples over ``n_channels`` unseen channels built from ``channel_spec`` (default:
    ``eot_spec``). ``progress(message)`` is called once per batch when given."""
    if eot < 1:
        raise ParameterError(f"--eot must be at least 1, got {eot}")
    get_registry().resolve("attack", attack)  # a typo fails before any model loads
    check_crafting_spec(eot_spec)
    channels = unseen_channels(channel_spec or eot_spec, n_channels)
    b = bench(model, config)
    system = b.system
    crafting_defense = get_registry().build("defense", eot_spec)
    defended = DefendedSystem(system, [crafting_defense], config.defense_order)
    methods = ("benign", "plain", "eot")
    digital: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    over: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    seconds = {m: 0.0 for m in methods}
    for bi, sl in b.batches():
        x, y, claims = b.load(sl), b.goal(sl), b.claims(sl)
        waves = {"benign": x}
        t0 = time.perf_counter()
        waves["plain"] = craft(attack, DefendedSystem(system, []), x, y, claims,
                               non_adaptive_seed(config.seed, attack, bi), targeted=config.targeted,
                               dataset=b.dataset).adv
        seconds["plain"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        waves["eot"] = craft(attack, defended, x, y, claims, adaptive_seed(config.seed, attack, eot_spec, bi),
                             eot=eot, targeted=config.targeted, dataset=b.dataset).adv
        seconds["eot"] += time.perf_counter() - t0
        for m in methods:
            t0 = time.perf_counter()
            digital[m].append(evaluate(system, waves[m], y, config.targeted, claims)[1])
            over[m].append(over_channels(system, waves[m], y, config.targeted, channels, config.seed, claims))
            seconds[m] += time.perf_counter() - t0
        if progress is not None:
            progress(f"batch {bi + 1}")
    return ChannelSetting(attack, system.task.value, eot_spec, eot, b.ids(),
                          {m: torch.cat(v) for m, v in digital.items()},
                          {m: torch.cat(v, dim=1) for m, v in over.items()}, seconds)
