"""The contract-test kit: check that a plugin's components behave as sec4sr expects.

Plain functions, usable from any test runner::

    from sec4sr_core.testing import check_defense
    check_defense(MyDefense)                      # raises ContractError naming every violated rule

and a pytest plugin (``pytest -p sec4sr_core.testing``, or the ``pytest11`` entry point) giving the fixtures
``sec4sr_contract`` (the checks plus a tiny synthetic system to run them on) and ``sec4sr_plugin`` (register an
inline plugin for one test)::

    def test_contract(sec4sr_contract):
        sec4sr_contract.check_defense(MyDefense)
        sec4sr_contract.check_attack(MyAttack, {"steps": 2})

Every rule has an id (``defense.deterministic``, ``attack.budget``, ...) listed in :data:`RULES`; a violation
message starts with it. The checks run on small synthetic inputs — a :class:`TinyModel` with levels
``wave`` → ``raw`` → ``final`` enrolled on seeded random "voices" — so they take a fraction of a second per
component (backbones are checked on their own, with random weights unless ``load_weights=True``).
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from sec4sr_core.base.errors import KnowledgeError, ParameterError, PluginError, Sec4srError
from sec4sr_core.sdk.attack import Attack, AttackResult
from sec4sr_core.sdk.interfaces import REJECT, SAMPLE_RATE, Dataset, Defense, Knowledge, Metric, SpeakerModel
from sec4sr_core.sdk.interfaces import Task, Utterance
from sec4sr_core.base.params import Params

__all__ = [
    "RULES", "Contract", "ContractError", "TinyModel", "Violation", "check_attack", "check_dataset",
    "check_defense", "check_metric", "check_model", "check_preset", "check_registered", "registered",
    "tiny_system", "waves",
]

#: Every rule the kit checks: id -> what it requires. Violation messages start with the id.
RULES: dict[str, str] = {
    "component.name": "`name` is a non-empty spec-safe id: letters, digits, `-`, `_`, `.` (no `:`, `+`, `,`, `=`, spaces)",
    "component.load": "a component registered by path (\"module:Class\") imports",
    "component.unique": "no other component of the same kind is registered under the same name",
    "component.summary": "`summary` (or the docstring's first line) is one non-empty line",
    "params.model": "`Params` subclasses `sec4sr_core.sdk.Params` (unknown keys refused, values validated)",
    "params.described": "every parameter has a description (state its unit)",
    "params.defaults": "the defaults (plus the parameters given to the check) validate",
    "params.unknown": "an unknown parameter is refused with a ParameterError",
    "params.bounds": "a value outside a declared numeric bound (ge/gt/le/lt) is refused with a ParameterError",
    "defense.declaration": "`acts_on` is a non-empty subset of {wave, feature}; `level` is one it allows; "
                           "`differentiable` and `randomized` are bools",
    "defense.shape": "the output keeps batch size, dims (and, for waves, length), dtype and device; it is finite; "
                     "wave outputs stay in [-1, 1]",
    "defense.input": "the input tensor is not modified in place",
    "defense.deterministic": "a defense with `randomized = False` gives identical outputs for identical inputs",
    "defense.seeded": "a randomized defense draws only from `self.rng(device)`: the same `seed()` gives the same output",
    "defense.differentiable": "a defense with `differentiable = True` passes a finite, non-zero gradient that "
                              "agrees with finite differences",
    "defense.chain": "the defense runs inside a DefendedSystem at its level and the defended system has a gradient "
                     "(BPDA when not differentiable)",
    "attack.declaration": "`knowledge` is a Knowledge; `norm` is None, 'linf' or 'l2'",
    "attack.knowledge": "the attack asks its oracle only for what its knowledge level allows",
    "attack.result": "`run` returns an AttackResult: adv (B, 1, T) float32, finite, in [-1, 1], detached, on x's "
                     "device; success (B,) bool; queries (B,) int64 >= 0; decisions (B,) int64",
    "attack.input": "the input tensor is not modified in place",
    "attack.budget": "with norm 'linf' ('l2') and a numeric params.epsilon, every utterance's |adv - x|∞ "
                     "(‖adv - x‖₂) stays within epsilon (a norm without epsilon names the distance a "
                     "minimum-distortion attack minimises: nothing to bound)",
    "attack.queries": "reported queries equal the oracle's count, and every probe the system evaluated went "
                      "through the oracle",
    "attack.decisions": "reported decisions equal the system's decisions on adv",
    "attack.deterministic": "two runs with the same seed return the same adversarial examples",
    "model.declaration": "`levels` start with 'wave', end with 'final', no repeats; `output` is 'embedding' or "
                         "'logits'; `tasks` are Tasks (a logits model serves csi-ne, an embedding model csi-e/sv/osi)",
    "model.levels": "to_level gives (B, frames, dims) at every non-wave level; a level to itself is the identity; "
                    "an unknown level raises a Sec4srError",
    "model.chain": "going through an intermediate level equals going directly, and embed() from any level equals "
                   "embed() from the waveform",
    "model.head": "head gives finite (B, D) embeddings or (B, C) logits (C = len(class_ids) when set); "
                  "enroll_embeddings maps (N, D) to (D,)",
    "model.batch": "an utterance's output does not depend on the rest of its batch",
    "model.deterministic": "eval-mode outputs are identical for identical inputs",
    "model.differentiable": "the scores have a finite, non-zero gradient with respect to the waveform (for a "
                            "model with needs_training = True, only checked with its weights: load_weights=True); a "
                            "model declaring differentiable = False must refuse backward with a KnowledgeError",
    "model.scores": "an enrolled system gives scores (B, S) (SV: (B, 1)) and decisions (B,) int64 in {-1, 0..S-1}",
    "metric.declaration": "`unit` is a str; `higher_is_better` is True, False or None",
    "metric.values": "compute returns one float per utterance",
    "metric.input": "the input tensors are not modified in place",
    "metric.batch": "an utterance's value does not depend on the rest of its batch",
    "metric.deterministic": "identical inputs give identical values",
    "dataset.splits": "the seven standard splits are answered with Utterance rows (ids unique per split); an "
                      "unknown split raises a Sec4srError",
    "dataset.speakers": "enrolled speakers are sorted; no imposter speaker is enrolled; test speakers are enrolled",
    "dataset.files": "the first utterance of each non-empty split loads as audio",
    "dataset.fingerprint": "fingerprint() is a non-empty str, the same on every call",
    "preset.component": "a preset names a registered component of its kind and its parameters validate",
}

STANDARD_SPLITS = ("enroll", "dev", "test", "imposter-dev", "imposter-test", "train", "heldout")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ---------------------------------------------------------------------------------------------------------------
# Violations
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    rule: str  #: a key of RULES
    message: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.message}"


class ContractError(AssertionError):
    """A component breaks one or more contract rules; ``violations`` lists them, the message names each rule."""

    def __init__(self, kind: str, name: str, violations: Sequence[Violation]) -> None:
        self.kind, self.name, self.violations = kind, name, list(violations)
        n = len(self.violations)
        lines = [f"{kind} {name!r} breaks {n} contract rule{'s' if n != 1 else ''}:"]
        lines += [f"  {v}" for v in self.violations]
        super().__init__("\n".join(lines))

    @property
    def rules(self) -> list[str]:
        return [v.rule for v in self.violations]


class _Checker:
    def __init__(self, kind: str, name: str) -> None:
        self.kind, self.name = kind, name
        self.violations: list[Violation] = []

    @property
    def who(self) -> str:
        return f"{self.kind} {self.name!r}"

    def fail(self, rule: str, message: str) -> None:
        assert rule in RULES, rule
        if not any(v.rule == rule and v.message == message for v in self.violations):
            self.violations.append(Violation(rule, message))

    def has(self, rule: str) -> bool:
        return any(v.rule == rule for v in self.violations)

    @contextlib.contextmanager
    def guard(self, rule: str, doing: str) -> Iterator[None]:
        """Turn an exception inside the block into a violation of ``rule``."""
        try:
            yield
        except _Abort:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as a violation
            self.fail(rule, f"{self.who} raised {type(exc).__name__} while {doing}: {_one_line(exc)}")
            raise _Abort from None

    def done(self) -> None:
        __tracebackhide__ = True
        if self.violations:
            raise ContractError(self.kind, self.name, self.violations)


class _Abort(Exception):
    """Stop the current group of checks (its violation is already recorded)."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return math.inf
    return float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    if a.shape != b.shape:
        return False
    scale = float(b.detach().abs().max()) if b.numel() else 0.0
    return _maxdiff(a, b) <= atol + rtol * max(scale, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# Synthetic inputs and a tiny system
# ---------------------------------------------------------------------------------------------------------------


def waves(batch: int = 2, seconds: float = 0.25, seed: int = 0, device: str | torch.device = "cpu") -> torch.Tensor:
    """Seeded voice-like test signals (B, 1, T) float32 at 16 kHz: harmonics of a random f0 (90–250 Hz) with a
    syllable-rate envelope and a little noise, peak 0.3 (well inside [-1, 1])."""
    g = torch.Generator().manual_seed(int(seed))
    t = torch.arange(int(round(seconds * SAMPLE_RATE)), dtype=torch.float64) / SAMPLE_RATE
    f0 = 90 + 160 * torch.rand(batch, 1, generator=g, dtype=torch.float64)
    k = torch.arange(1, 11, dtype=torch.float64).view(1, -1, 1)
    amps = torch.rand(batch, 10, 1, generator=g, dtype=torch.float64) / k
    phase = 2 * math.pi * torch.rand(batch, 10, 1, generator=g, dtype=torch.float64)
    voiced = (amps * torch.sin(2 * math.pi * f0.unsqueeze(-1) * k * t + phase)).sum(dim=1)
    rate = 3 + 3 * torch.rand(batch, 1, generator=g, dtype=torch.float64)
    envelope = 0.55 + 0.45 * torch.sin(2 * math.pi * rate * t)
    x = voiced * envelope + 0.02 * torch.randn(batch, t.numel(), generator=g, dtype=torch.float64)
    x = 0.3 * x / x.abs().amax(dim=1, keepdim=True).clamp_min(1e-9)
    return x.to(torch.float32).unsqueeze(1).to(device)


class TinyModel(SpeakerModel):
    """A small deterministic backbone for contract checks (not registered).

    ``wave`` (B, 1, T) -> ``raw`` (B, frames, 12): log band energies of 256-sample Hann frames, hop 128 ->
    ``final`` (B, frames, 12): fixed global mean/variance normalisation -> embedding (B, 16): frame-wise tanh of a
    fixed random projection, averaged over frames. Cosine scoring. Differentiable and batched.
    """

    name = "tiny"
    summary = "A small deterministic backbone used by the contract kit."
    stages = (("raw", "log_bands"), ("final", "rescale"))
    output = "embedding"
    tasks = (Task.CSI_E, Task.SV, Task.OSI)
    FRAME, HOP, BANDS, DIM = 256, 128, 12, 16

    def __init__(self, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        g = torch.Generator().manual_seed(1234)
        freqs = self.FRAME // 2 + 1
        edges = torch.linspace(0, freqs, self.BANDS + 1).round().long()
        bands = torch.zeros(freqs, self.BANDS)
        for i in range(self.BANDS):
            bands[edges[i] : edges[i + 1], i] = 1.0
        self.register_buffer("bands", bands, persistent=False)
        self.register_buffer("window", torch.hann_window(self.FRAME), persistent=False)
        self.proj = nn.Linear(self.BANDS, self.DIM)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(self.DIM, self.BANDS, generator=g) / math.sqrt(self.BANDS))
            self.proj.bias.copy_(0.1 * torch.randn(self.DIM, generator=g))

    def load_weights(self, home: Any) -> None:
        """No weights: the parameters are fixed at construction."""

    def log_bands(self, x: torch.Tensor) -> torch.Tensor:
        """``wave`` (B, 1, T) -> ``raw`` (B, frames, 12) log band energies."""
        wave = x.reshape(x.shape[0], -1)
        if wave.shape[1] < self.FRAME:
            wave = nn.functional.pad(wave, (0, self.FRAME - wave.shape[1]))
        frames = wave.unfold(1, self.FRAME, self.HOP) * self.window  # (B, F, FRAME)
        power = torch.fft.rfft(frames, dim=-1).abs().pow(2)
        return torch.log(power @ self.bands + 1e-4)

    def rescale(self, x: torch.Tensor) -> torch.Tensor:
        """``raw`` -> ``final``: fixed global normalisation."""
        return (x + 2.0) / 4.0

    def head(self, final: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(final)).mean(dim=1)


def tiny_system(task: Task | str = "csi-e", n_speakers: int = 4, seconds: float = 0.25, seed: int = 0,
                model: SpeakerModel | None = None, device: str | torch.device = "cpu"):
    """A :class:`~sec4sr_core.sdk.system.SpeakerSystem` of ``model`` (default :class:`TinyModel`) enrolled on seeded
    synthetic voices (2 utterances per speaker). SV/OSI get the threshold halfway between the mean genuine and the
    mean imposter score, so both accept and reject happen."""
    from sec4sr_core.sdk.system import SpeakerSystem

    task = Task(task)
    model = (model or TinyModel()).eval().to(device)
    with torch.no_grad():
        enroll = waves(2 * n_speakers, seconds, seed + 101, device)
        embs = model.embed(enroll).view(n_speakers, 2, -1)
        enrolled = torch.stack([model.enroll_embeddings(e) for e in embs])
        speakers = [f"spk{i}" for i in range(n_speakers)]
        threshold = None
        if task.has_threshold:
            genuine = model.score(model.embed(enroll), enrolled).max(dim=1).values.mean()
            imposter = model.score(model.embed(waves(8, seconds, seed + 202, device)), enrolled).max(dim=1).values.mean()
            threshold = float((genuine + imposter) / 2)
    return SpeakerSystem(model, task, speakers, enrolled, threshold)


# ---------------------------------------------------------------------------------------------------------------
# Shared checks: registration and parameters
# ---------------------------------------------------------------------------------------------------------------


def _check_registration(c: _Checker, kind: str, cls: type, registry: Any = None) -> None:
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not _NAME.match(name or ""):
        c.fail("component.name", f"{kind} class {cls.__qualname__} has name {name!r}; use a spec-safe id such as "
                                 f"'my-defense' (letters, digits, '-', '_', '.')")
    summary = cls.describe() if hasattr(cls, "describe") else ""
    if not summary or not summary.strip():
        c.fail("component.summary", f"{c.who} has no summary: set `summary = \"...\"` or give the class a docstring")
    elif "\n" in summary:
        c.fail("component.summary", f"{c.who} has a multi-line summary; keep it to one line")
    if registry is False or not name:
        return
    try:
        if registry is None:
            from sec4sr_core.plugins.manager import get_registry, statuses

            registry = get_registry()
            # the author's plugin loaded first and so disabled another that registers the same name
            for st in statuses():
                error = str(getattr(st, "error", "") or "")
                if getattr(st, "status", "") == "disabled" and "duplicate" in error and repr(name) in error:
                    c.fail("component.unique", f"{c.who}: {error}")
        entry = registry.entries[kind].get(name)
    except PluginError:
        return
    if entry is None:
        return
    try:
        target = entry.load()
    except PluginError:
        return
    if target is not cls and _qualname(target) != _qualname(cls):
        c.fail("component.unique", f"{kind} name {name!r} is already registered by {entry.distribution} for "
                                   f"{_qualname(target)}; choose another name for {_qualname(cls)}")


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _check_params(c: _Checker, cls: type, params: dict[str, Any] | None) -> Params | None:
    """Rules params.*; returns the validated parameters, or None when they do not validate."""
    params = dict(params or {})
    pcls = getattr(cls, "Params", None)
    if not (isinstance(pcls, type) and issubclass(pcls, Params)):
        c.fail("params.model", f"{c.who}: `Params` must subclass sec4sr_core.sdk.Params, got {pcls!r}")
        if not (isinstance(pcls, type) and hasattr(pcls, "model_fields")):
            return None
    for field, info in pcls.model_fields.items():
        if not (info.description or "").strip():
            c.fail("params.described", f"{c.who}: parameter {field!r} has no description; "
                                       f"use Field(..., description=\"... (unit)\")")
    try:
        validated = cls.make_params(params)
    except ParameterError as exc:
        missing = [f for f, i in pcls.model_fields.items() if i.is_required() and f not in params]
        hint = f" (required: {', '.join(missing)}; pass them to the check)" if missing else ""
        c.fail("params.defaults", f"{c.who}: the parameters {params or 'defaults'} do not validate: "
                                  f"{_one_line(exc)}{hint}")
        return None
    except Exception as exc:  # noqa: BLE001
        c.fail("params.defaults", f"{c.who}: validating {params or 'the defaults'} raised "
                                  f"{type(exc).__name__} instead of ParameterError: {_one_line(exc)}")
        return None
    base = validated.model_dump()
    _expect_refused(c, "params.unknown", cls, {**base, "no_such_parameter_xyz": 1},
                    "accepted the unknown parameter 'no_such_parameter_xyz'")
    props = pcls.model_json_schema().get("properties", {})
    for field, bad in _out_of_bounds(props):
        _expect_refused(c, "params.bounds", cls, {**base, field: bad},
                        f"parameter {field!r} declares a bound but accepted {bad!r}")
    return validated


def _expect_refused(c: _Checker, rule: str, cls: type, values: dict[str, Any], message: str) -> None:
    try:
        cls.make_params(values)
    except ParameterError:
        return
    except Exception as exc:  # noqa: BLE001
        c.fail(rule, f"{c.who}: {message.split(' but ')[0]} but raised {type(exc).__name__} instead of "
                     f"ParameterError: {_one_line(exc)}")
        return
    c.fail(rule, f"{c.who}: {message}")


def _out_of_bounds(props: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for field, prop in props.items():
        options = prop.get("anyOf", [prop])
        for opt in options:
            typ = opt.get("type")
            if typ not in ("integer", "number"):
                continue
            step = 1 if typ == "integer" else None
            if "minimum" in opt:
                m = opt["minimum"]
                yield field, (m - 1 if step else m - max(1.0, abs(m)))
            if "exclusiveMinimum" in opt:
                yield field, opt["exclusiveMinimum"]
            if "maximum" in opt:
                m = opt["maximum"]
                yield field, (m + 1 if step else m + max(1.0, abs(m)))
            if "exclusiveMaximum" in opt:
                yield field, opt["exclusiveMaximum"]


def _build(c: _Checker, cls: type, params: Params) -> Any:
    with c.guard("params.defaults", f"being built with {params.model_dump()}"):
        return cls(params)


# ---------------------------------------------------------------------------------------------------------------
# Defenses
# ---------------------------------------------------------------------------------------------------------------


def check_defense(cls: type[Defense], params: dict[str, Any] | None = None, *, model: SpeakerModel | None = None,
                  batch: int = 2, seconds: float = 0.25, seed: int = 0, gradcheck: bool = True,
                  registry: Any = None) -> None:
    """Check a :class:`~sec4sr_core.Defense` class on synthetic input (waves, or ``model``'s feature levels —
    :class:`TinyModel`'s ``raw`` and ``final`` by default). Raises :class:`ContractError` listing every violation."""
    __tracebackhide__ = True
    c = _Checker("defense", getattr(cls, "name", "") or cls.__qualname__)
    _check_registration(c, "defense", cls, registry)
    p = _check_params(c, cls, params)
    acts_on = getattr(cls, "acts_on", ())
    if (not isinstance(acts_on, tuple) or not acts_on or not set(acts_on) <= {"wave", "feature"}):
        c.fail("defense.declaration", f"{c.who}: acts_on must be a non-empty tuple of 'wave'/'feature', "
                                      f"got {acts_on!r}")
    for attr in ("differentiable", "randomized"):
        if not isinstance(getattr(cls, attr, None), bool):
            c.fail("defense.declaration", f"{c.who}: `{attr}` must be True or False, got {getattr(cls, attr, None)!r}")
    if p is None or c.has("defense.declaration"):
        c.done()
        return
    model = (model or TinyModel()).eval()
    x_wave = waves(batch, seconds, seed)
    explicit_level = "level" in (params or {})
    try:
        probe = _build(c, cls, p)
    except _Abort:
        c.done()
        return
    if explicit_level:
        levels = [probe.level]
    else:
        levels = (["wave"] if "wave" in acts_on else []) + (
            [lv for lv in model.levels if lv != "wave"] if "feature" in acts_on else [])
    for level in levels:
        if level not in model.levels:
            c.fail("defense.declaration", f"{c.who} acts on level {level!r}, which the test model does not have "
                                          f"(levels: {', '.join(model.levels)}); pass model= to the check")
            continue
        kind = "wave" if level == "wave" else "feature"
        if kind not in acts_on:
            c.fail("defense.declaration", f"{c.who}: level {level!r} is not allowed by acts_on={acts_on!r}")
            continue
        try:
            _check_defense_at(c, cls, p, model, x_wave, level, seed, gradcheck)
        except _Abort:
            pass
    c.done()


def _at_level(cls: type[Defense], p: Params, level: str) -> Defense:
    if "level" in type(p).model_fields:
        p = cls.make_params(p, level=level)
    d = cls(p)
    d.level = level
    return d


def _check_defense_at(c: _Checker, cls: type[Defense], p: Params, model: SpeakerModel, x_wave: torch.Tensor,
                      level: str, seed: int, gradcheck: bool) -> None:
    where = f"at level {level!r}"
    with c.guard("defense.declaration", f"being set to level {level!r}"):
        d = _at_level(cls, p, level)
    with torch.no_grad():
        x = x_wave if level == "wave" else model.to_level(x_wave, "wave", level)
    x = x.detach()
    x_before = x.clone()

    def call(inp: torch.Tensor, global_seed: int, defense_seed: int | None = None) -> torch.Tensor:
        torch.manual_seed(global_seed)
        if defense_seed is not None:
            d.seed(defense_seed, inp.device)
        return d(inp)

    with torch.no_grad(), c.guard("defense.shape", f"transforming a {tuple(x.shape)} input {where}"):
        out = call(x, 11, seed)
    if not torch.equal(x, x_before):
        c.fail("defense.input", f"{c.who} modified its input in place {where}")
    if not isinstance(out, torch.Tensor):
        c.fail("defense.shape", f"{c.who} returned {type(out).__name__}, not a tensor, {where}")
        return
    if level == "wave":
        if out.shape != x.shape:
            c.fail("defense.shape", f"{c.who} changed the waveform shape {tuple(x.shape)} -> {tuple(out.shape)} {where}")
    elif out.dim() != 3 or out.shape[0] != x.shape[0] or out.shape[2] != x.shape[2] or out.shape[1] < 1:
        c.fail("defense.shape", f"{c.who} turned features {tuple(x.shape)} into {tuple(out.shape)} {where}; "
                                f"keep (B, frames', dims)")
    if out.dtype != x.dtype:
        c.fail("defense.shape", f"{c.who} changed the dtype {x.dtype} -> {out.dtype} {where}")
    if out.device != x.device:
        c.fail("defense.shape", f"{c.who} moved the tensor {x.device} -> {out.device} {where}")
    if out.is_floating_point() and not bool(torch.isfinite(out).all()):
        c.fail("defense.shape", f"{c.who} produced NaN or infinite values {where}")
    elif level == "wave" and out.numel() and float(out.detach().abs().max()) > 1.0:
        c.fail("defense.shape", f"{c.who} produced samples outside [-1, 1] (max |x| = "
                                f"{float(out.detach().abs().max()):.4g}) {where}")
    if c.has("defense.shape"):
        return
    with torch.no_grad():
        if not cls.randomized:
            again = call(x, 22, seed + 1)
            if not torch.equal(out, again):
                c.fail("defense.deterministic", f"{c.who} is declared deterministic (randomized = False) but two "
                                                f"calls on the same input differ (max |difference| "
                                                f"{_maxdiff(out, again):.3g}) {where}")
        else:
            again = call(x, 22, seed)
            if not torch.equal(out, again):
                c.fail("defense.seeded", f"{c.who} is randomized but does not draw only from self.rng(device): "
                                         f"after seed({seed}) twice the outputs differ (max |difference| "
                                         f"{_maxdiff(out, again):.3g}) {where}")
    if cls.differentiable and gradcheck:
        # finite differences need reproducible outputs; a defense already flagged for randomness skips that part
        unstable = c.has("defense.deterministic") or c.has("defense.seeded")
        _gradcheck_defense(c, d, x, seed, where, finite_differences=not unstable)
    _check_defense_in_chain(c, d, model, x_wave, seed, where)


def _gradcheck_defense(c: _Checker, d: Defense, x: torch.Tensor, seed: int, where: str,
                       finite_differences: bool = True) -> None:
    """Directional derivative of <w, d(x)> along v: autograd against central differences (float64 when the
    defense accepts it)."""
    g = torch.Generator().manual_seed(seed + 7)
    dtype = torch.float64
    try:
        d.to(torch.float64)
        d.seed(seed, x.device)
        with torch.no_grad():
            if d(x.double()).dtype != torch.float64:
                dtype = x.dtype
    except Exception:  # noqa: BLE001 - the defense is float32-only: check in float32 with a looser tolerance
        dtype = x.dtype
    d.to(dtype)
    xx = x.to(dtype)

    def f(inp: torch.Tensor) -> torch.Tensor:
        d.seed(seed, inp.device)
        return d(inp)

    with torch.no_grad():
        w = torch.randn(f(xx).shape, generator=g, dtype=torch.float64).to(dtype)
    v = torch.randn(xx.shape, generator=g, dtype=torch.float64).to(dtype)
    v = v / v.norm()
    xg = xx.clone().requires_grad_(True)
    try:
        out = f(xg)
        if not out.requires_grad:
            c.fail("defense.differentiable", f"{c.who} is declared differentiable but its output has no gradient "
                                             f"graph (detached or computed under no_grad) {where}; declare "
                                             f"differentiable = False to get BPDA")
            return
        (grad,) = torch.autograd.grad((out * w).sum(), xg, allow_unused=True)
    except Exception as exc:  # noqa: BLE001
        c.fail("defense.differentiable", f"{c.who} is declared differentiable but backward raised "
                                         f"{type(exc).__name__}: {_one_line(exc)} {where}")
        return
    finally:
        d.to(torch.float32)
    if grad is None or not bool(torch.isfinite(grad).all()) or float(grad.abs().max()) == 0.0:
        state = "no" if grad is None else ("a non-finite" if not bool(torch.isfinite(grad).all()) else "an all-zero")
        c.fail("defense.differentiable", f"{c.who} is declared differentiable but passes {state} gradient {where}")
        return
    if not finite_differences:
        return
    h = (1e-6 if dtype == torch.float64 else 1e-3) * max(1.0, float(xx.abs().max()))
    d.to(dtype)
    try:
        with torch.no_grad():
            fd = float(((f(xx + h * v) - f(xx - h * v)) * w).sum()) / (2 * h)
    finally:
        d.to(torch.float32)
    an = float((grad * v).sum())
    tol = (0.02 if dtype == torch.float64 else 0.2) * max(abs(fd), abs(an)) + 1e-3 * float(w.abs().sum()) * (
        1e-6 if dtype == torch.float64 else 1e-3)
    if abs(fd - an) > tol:
        c.fail("defense.differentiable", f"{c.who} is declared differentiable but its gradient disagrees with finite "
                                         f"differences (directional derivative {an:.4g} by autograd, {fd:.4g} by "
                                         f"central differences) {where}")


def _check_defense_in_chain(c: _Checker, d: Defense, model: SpeakerModel, x_wave: torch.Tensor, seed: int,
                            where: str) -> None:
    from sec4sr_core.sdk.system import DefendedSystem

    system = tiny_system(model=model) if isinstance(model, TinyModel) else None
    if system is None:
        return
    x = x_wave.clone().requires_grad_(True)
    try:
        ds = DefendedSystem(system, [d])
        ds.seed(seed)
        scores = ds(x)
        (grad,) = torch.autograd.grad(scores.sum(), x, allow_unused=True) if scores.requires_grad else (None,)
    except Exception as exc:  # noqa: BLE001
        c.fail("defense.chain", f"{c.who} fails inside a DefendedSystem {where}: {type(exc).__name__}: "
                                f"{_one_line(exc)}")
        return
    if scores.shape != (x.shape[0], len(system.speakers)):
        c.fail("defense.chain", f"{c.who}: the defended system's scores are {tuple(scores.shape)}, expected "
                                f"{(x.shape[0], len(system.speakers))} {where}")
    if grad is None or not bool(torch.isfinite(grad).all()) or float(grad.abs().max()) == 0.0:
        c.fail("defense.chain", f"{c.who}: the defended system has no usable gradient {where} (adaptive attacks "
                                f"need one; non-differentiable defenses get BPDA only when they declare "
                                f"differentiable = False)")


# ---------------------------------------------------------------------------------------------------------------
# Attacks
# ---------------------------------------------------------------------------------------------------------------


def check_attack(cls: type[Attack], params: dict[str, Any] | None = None, *, system: Any = None,
                 task: Task | str = "csi-e", targeted: bool = False, batch: int = 3, seconds: float = 0.25,
                 seed: int = 0, eot: int = 1, registry: Any = None) -> None:
    """Run an :class:`~sec4sr_core.Attack` class against ``system`` (default: :func:`tiny_system` for ``task``)
    through the oracle of its knowledge level, and check its result. Raises :class:`ContractError`."""
    __tracebackhide__ = True
    from sec4sr_core.sdk.oracle import make_oracle
    from sec4sr_core.sdk.system import as_defended

    c = _Checker("attack", getattr(cls, "name", "") or cls.__qualname__)
    _check_registration(c, "attack", cls, registry)
    p = _check_params(c, cls, params)
    knowledge = getattr(cls, "knowledge", None)
    if not isinstance(knowledge, Knowledge):
        c.fail("attack.declaration", f"{c.who}: `knowledge` must be a sec4sr_core.Knowledge, got {knowledge!r}")
    norm = getattr(cls, "norm", None)
    if norm not in (None, "linf", "l2"):
        c.fail("attack.declaration", f"{c.who}: `norm` must be None, 'linf' or 'l2', got {norm!r}")
    epsilon = getattr(p, "epsilon", None) if p is not None else None
    bounded = isinstance(epsilon, (int, float)) and not isinstance(epsilon, bool)
    if p is None or c.has("attack.declaration"):
        c.done()
        return
    ds = as_defended(system if system is not None else tiny_system(task, seconds=seconds, seed=seed))
    x = waves(batch, seconds, seed + 1, ds.device)
    n_spk = len(ds.speakers)
    claims = torch.arange(batch, device=ds.device) % n_spk if ds.task == Task.SV else None
    with torch.no_grad():
        truth = ds.decide(ds(x, claims=claims))
    if targeted and ds.task == Task.SV:  # SV: accept (0) <-> reject (-1)
        y = torch.where(truth == 0, torch.full_like(truth, REJECT), torch.zeros_like(truth))
    elif targeted:  # another speaker than the current decision
        y = torch.where(truth == REJECT, torch.zeros_like(truth), (truth + 1) % n_spk)
    else:
        y = truth
    estimate = ds.threshold if (ds.task.has_threshold and knowledge != Knowledge.WHITE_BOX) else None

    evaluated = [0]

    def count(_module: nn.Module, args: tuple) -> None:
        evaluated[0] += int(args[0].shape[0])

    def run_once() -> tuple[AttackResult, Any]:
        attack = cls(p)
        request = attack.crafting_request() if hasattr(attack, "crafting_request") else None
        if request is not None:  # held-out crafting utterances, as the core hands them over in a study
            attack.set_crafting(waves(min(int(request.size), 8), seconds, seed + 2, ds.device), "contract kit")
        oracle = make_oracle(ds, knowledge, n=batch, claims=claims, eot=eot, seed=seed, estimated_threshold=estimate)
        torch.manual_seed(seed)
        return attack.run(oracle, x, y.clone(), targeted=targeted), oracle

    x_before = x.clone()
    hook = ds.register_forward_pre_hook(count)
    result = oracle = None
    try:
        result, oracle = run_once()
    except KnowledgeError as exc:
        c.fail("attack.knowledge", f"{c.who} declares knowledge {knowledge.value!r} but asked its oracle for more: "
                                   f"{_one_line(exc)}")
    except Exception as exc:  # noqa: BLE001
        c.fail("attack.result", f"{c.who} raised {type(exc).__name__} on a {tuple(x.shape)} batch "
                                f"({ds.task.value}, {'targeted' if targeted else 'untargeted'}): {_one_line(exc)}")
    finally:
        hook.remove()
    if result is None:
        c.done()
        return
    if not torch.equal(x, x_before):
        c.fail("attack.input", f"{c.who} modified its input batch in place")
    if not _check_attack_result(c, result, x, batch):
        c.done()
        return
    adv = result.adv.detach()
    delta = (adv.double() - x.double()).reshape(batch, -1)
    if norm == "linf" and bounded:
        worst = float(delta.abs().amax())
        if worst > epsilon * (1 + 1e-5) + 2e-7:  # float32 spacing near 1 is 6e-8
            c.fail("attack.budget", f"{c.who} left its L∞ ball: max |adv - x| = {worst:.6g} > epsilon = {epsilon:g}")
    elif norm == "l2" and bounded:
        worst = float(delta.norm(dim=1).max())
        if worst > epsilon * (1 + 1e-5) + 2e-7:  # float32 spacing near 1 is 6e-8
            c.fail("attack.budget", f"{c.who} left its L2 ball: max ‖adv - x‖₂ = {worst:.6g} > epsilon = {epsilon:g}")
    reported = result.queries.detach().cpu().to(torch.int64)
    counted = oracle.queries.detach().cpu()
    if not torch.equal(reported, counted):
        c.fail("attack.queries", f"{c.who} reports queries {reported.tolist()} but its oracle counted "
                                 f"{counted.tolist()}; return oracle.queries")
    if evaluated[0] != int(counted.sum()):
        c.fail("attack.queries", f"{c.who}: the system evaluated {evaluated[0]} probes but the oracle counted "
                                 f"{int(counted.sum())} queries; reach the system only through the oracle")
    if not ds.randomized:
        with torch.no_grad():
            actual = ds.decide(ds(adv.to(ds.device), claims=claims)).cpu()
        if not torch.equal(result.decisions.cpu().to(torch.int64), actual):
            c.fail("attack.decisions", f"{c.who} reports decisions {result.decisions.tolist()} but the system "
                                       f"decides {actual.tolist()} on the returned adv")
    try:
        again, _ = run_once()
        if not torch.equal(again.adv.detach(), adv):
            c.fail("attack.deterministic", f"{c.who}: two runs with seed {seed} differ (max |difference| "
                                           f"{_maxdiff(again.adv, adv):.3g}); draw randomness from "
                                           f"oracle.generator")
    except Exception as exc:  # noqa: BLE001
        c.fail("attack.deterministic", f"{c.who}: a second run with the same seed raised {type(exc).__name__}: "
                                       f"{_one_line(exc)}")
    c.done()


def _check_attack_result(c: _Checker, r: Any, x: torch.Tensor, batch: int) -> bool:
    if not isinstance(r, AttackResult):
        c.fail("attack.result", f"{c.who}: run returned {type(r).__name__}, not an AttackResult")
        return False
    ok = True

    def bad(message: str) -> None:
        nonlocal ok
        ok = False
        c.fail("attack.result", f"{c.who}: {message}")

    adv = r.adv
    if not isinstance(adv, torch.Tensor) or adv.shape != x.shape:
        bad(f"adv has shape {tuple(getattr(adv, 'shape', ()))}, expected {tuple(x.shape)}")
        return False
    if adv.dtype != torch.float32:
        bad(f"adv has dtype {adv.dtype}, expected torch.float32")
    if adv.device != x.device:
        bad(f"adv is on {adv.device}, the input on {x.device}")
    if adv.requires_grad:
        bad("adv still requires grad; return adv.detach()")
    if not bool(torch.isfinite(adv).all()):
        bad("adv has NaN or infinite samples")
    elif float(adv.detach().abs().max()) > 1.0:
        bad(f"adv leaves [-1, 1] (max |adv| = {float(adv.detach().abs().max()):.4g})")
    for field, dtype in (("success", torch.bool), ("queries", torch.int64), ("decisions", torch.int64)):
        t = getattr(r, field)
        if not isinstance(t, torch.Tensor) or t.shape != (batch,) or t.dtype != dtype:
            desc = (f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__)
            bad(f"{field} is {desc}, expected ({batch},) {dtype}")
    if isinstance(r.queries, torch.Tensor) and r.queries.dtype == torch.int64 and bool((r.queries < 0).any()):
        bad(f"negative query counts {r.queries.tolist()}")
    return ok


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


def check_model(cls: type[SpeakerModel], params: dict[str, Any] | None = None, *, batch: int = 2,
                seconds: float = 0.5, seed: int = 0, load_weights: bool = False, home: Any = None,
                registry: Any = None) -> None:
    """Check a :class:`~sec4sr_core.SpeakerModel` class (random weights unless ``load_weights``): declarations,
    feature levels and their chaining, head shapes, batch independence, determinism, gradients and the scores of
    an enrolled system for each of its tasks. Raises :class:`ContractError`."""
    __tracebackhide__ = True
    c = _Checker("model", getattr(cls, "name", "") or cls.__qualname__)
    _check_registration(c, "model", cls, registry)
    p = _check_params(c, cls, params)
    levels = getattr(cls, "levels", ())
    if (not isinstance(levels, tuple) or len(levels) < 2 or levels[0] != "wave" or levels[-1] != "final"
            or len(set(levels)) != len(levels)):
        c.fail("model.declaration", f"{c.who}: levels must start with 'wave', end with 'final' and not repeat, "
                                    f"got {levels!r}")
    output = getattr(cls, "output", None)
    if output not in ("embedding", "logits"):
        c.fail("model.declaration", f"{c.who}: output must be 'embedding' or 'logits', got {output!r}")
    tasks = getattr(cls, "tasks", ())
    if not tasks or not all(isinstance(t, Task) for t in tasks):
        c.fail("model.declaration", f"{c.who}: tasks must be a non-empty tuple of sec4sr_core.Task, got {tasks!r}")
    elif output == "logits" and Task.CSI_NE not in tasks:
        c.fail("model.declaration", f"{c.who} outputs logits but does not list Task.CSI_NE")
    elif output == "embedding" and not set(tasks) & {Task.CSI_E, Task.SV, Task.OSI}:
        c.fail("model.declaration", f"{c.who} outputs embeddings but lists none of csi-e, sv, osi")
    if p is None or c.has("model.declaration"):
        c.done()
        return
    try:
        with c.guard("params.defaults", "being built"):
            model = cls(p)
        if load_weights:
            from sec4sr_core.sdk.modelstore import home as default_home

            with c.guard("model.head", "loading its weights"):
                model.load_weights(home or default_home())
        model.eval()
        _check_model_body(c, model, batch, seconds, seed,
                          gradients=load_weights or not getattr(cls, "needs_training", False),
                          differentiable=getattr(cls, "differentiable", True))
    except _Abort:
        pass
    c.done()


def _check_model_body(c: _Checker, model: SpeakerModel, batch: int, seconds: float, seed: int,
                      gradients: bool = True, differentiable: bool = True) -> None:
    x = waves(batch, seconds, seed, model.device)
    feats: dict[str, torch.Tensor] = {"wave": x}
    with torch.no_grad():
        for level in model.levels[1:]:
            with c.guard("model.levels", f"computing level {level!r} from the waveform"):
                f = model.to_level(x, "wave", level)
            if not isinstance(f, torch.Tensor) or f.dim() != 3 or f.shape[0] != batch:
                c.fail("model.levels", f"{c.who}: level {level!r} is {tuple(getattr(f, 'shape', ()))}, expected "
                                       f"(B={batch}, frames, dims)")
                raise _Abort
            if not bool(torch.isfinite(f).all()):
                c.fail("model.levels", f"{c.who}: level {level!r} has NaN or infinite values")
            feats[level] = f
            with c.guard("model.levels", f"mapping level {level!r} to itself"):
                same = model.to_level(f, level, level)
            if not torch.equal(same, f):
                c.fail("model.levels", f"{c.who}: to_level(x, {level!r}, {level!r}) is not the identity")
        bad_walks = [(x, "wave", "no-such-level", "accepted the unknown level 'no-such-level'", "an unknown level")]
        if len(model.levels) > 1:
            top, bottom = model.levels[-1], model.levels[0]
            bad_walks.append((feats[top], top, bottom, f"went back from {top!r} to {bottom!r} without an error",
                              "a backwards walk"))
        for tensor, src, dst, accepted, what in bad_walks:
            try:
                model.to_level(tensor, src, dst)
                c.fail("model.levels", f"{c.who}: to_level {accepted}")
            except Sec4srError:
                pass
            except Exception as exc:  # noqa: BLE001
                c.fail("model.levels", f"{c.who}: {what} raised {type(exc).__name__}, not a Sec4srError "
                                       f"(declare `stages`; the base class validates levels)")
        names = list(model.levels)
        for i, a in enumerate(names[1:-1], start=1):
            for b in names[i + 1 :]:
                with c.guard("model.chain", f"computing level {b!r} from level {a!r}"):
                    via = model.to_level(feats[a], a, b)
                if not _close(via, feats[b]):
                    c.fail("model.chain", f"{c.who}: level {b!r} computed via {a!r} differs from computing it from "
                                          f"the waveform (max |difference| {_maxdiff(via, feats[b]):.3g})")
        with c.guard("model.head", "embedding the waveform"):
            emb = model.embed(x, "wave")
        if not isinstance(emb, torch.Tensor) or emb.dim() != 2 or emb.shape[0] != batch:
            c.fail("model.head", f"{c.who}: embed/head gives {tuple(getattr(emb, 'shape', ()))}, expected (B={batch}, D)")
            raise _Abort
        if not bool(torch.isfinite(emb).all()):
            c.fail("model.head", f"{c.who}: the embedding has NaN or infinite values")
        if model.output == "logits" and model.class_ids and emb.shape[1] != len(model.class_ids):
            c.fail("model.head", f"{c.who}: {emb.shape[1]} logits but {len(model.class_ids)} class_ids")
        for level in names[1:]:
            with c.guard("model.chain", f"embedding from level {level!r}"):
                e = model.embed(feats[level], level)
            if not _close(e, emb):
                c.fail("model.chain", f"{c.who}: embed() from level {level!r} differs from embed() from the waveform "
                                      f"(max |difference| {_maxdiff(e, emb):.3g})")
        torch.manual_seed(123)
        again = model.embed(x, "wave")
        if not torch.equal(again, emb):
            c.fail("model.deterministic", f"{c.who}: two eval-mode calls on the same input differ (max |difference| "
                                          f"{_maxdiff(again, emb):.3g}); no dither or dropout at evaluation")
        single = model.embed(x[:1], "wave")
        if not _close(single, emb[:1], rtol=1e-3, atol=1e-4):
            c.fail("model.batch", f"{c.who}: utterance 0 embedded alone differs from the same utterance in a batch of "
                                  f"{batch} (max |difference| {_maxdiff(single, emb[:1]):.3g})")
        if model.output == "embedding":
            with c.guard("model.head", "combining enrollment embeddings"):
                combined = model.enroll_embeddings(emb)
            if not isinstance(combined, torch.Tensor) or combined.shape != emb.shape[1:]:
                c.fail("model.head", f"{c.who}: enroll_embeddings maps {tuple(emb.shape)} to "
                                     f"{tuple(getattr(combined, 'shape', ()))}, expected {tuple(emb.shape[1:])}")
                raise _Abort
    _check_model_scores(c, model, x, seed, gradients, differentiable)


def _check_model_scores(c: _Checker, model: SpeakerModel, x: torch.Tensor, seed: int, gradients: bool = True,
                        differentiable: bool = True) -> None:
    """Scores and decisions of a system of ``model`` for each of its tasks; the gradient once (first task)."""
    from sec4sr_core.sdk.system import SpeakerSystem

    batch = x.shape[0]
    enrolled, threshold, speakers = None, None, []
    with torch.no_grad(), c.guard("model.scores", "enrolling three synthetic speakers"):
        if model.output == "embedding":
            embs = model.embed(waves(3, x.shape[-1] / SAMPLE_RATE, seed + 101, x.device))
            enrolled = torch.stack([model.enroll_embeddings(e.unsqueeze(0)) for e in embs])
            threshold = float(model.score(model.embed(x), enrolled).max(dim=1).values.median())
            speakers = ["spk0", "spk1", "spk2"]
        else:
            n = model.embed(x[:1]).shape[1]
            speakers = list(model.class_ids) or [f"class{i}" for i in range(n)]
    need_grad = gradients  # an untrained model (needs_training) may be constant: no gradient to check
    for task in model.tasks:
        with c.guard("model.scores", f"building a {task.value} system"):
            system = SpeakerSystem(model, task, speakers, enrolled, threshold if task.has_threshold else None)
        s_expected = 1 if task == Task.SV else len(system.speakers)
        claims = torch.zeros(batch, dtype=torch.int64, device=x.device) if task == Task.SV else None
        xg = x.clone().requires_grad_(need_grad)
        with torch.set_grad_enabled(need_grad), c.guard("model.scores", f"scoring for {task.value}"):
            scores = system(xg, claims=claims)
            decisions = system.decide(scores.detach())
        if scores.shape != (batch, s_expected):
            c.fail("model.scores", f"{c.who}: {task.value} scores are {tuple(scores.shape)}, expected "
                                   f"{(batch, s_expected)}")
            continue
        if decisions.shape != (batch,) or decisions.dtype != torch.int64 or bool(
                ((decisions < REJECT) | (decisions >= s_expected)).any()):
            c.fail("model.scores", f"{c.who}: {task.value} decisions {decisions.tolist()} ({decisions.dtype}) are "
                                   f"not (B,) int64 in {{-1, 0..{s_expected - 1}}}")
        if not need_grad:
            continue
        need_grad = False
        if not differentiable:  # a gradient-free backbone must refuse backward with the knowledge error
            try:
                torch.autograd.grad(scores.sum(), xg)
            except KnowledgeError:
                continue
            except Exception as exc:  # noqa: BLE001
                c.fail("model.differentiable", f"{c.who}: declares differentiable = False, but backward raised "
                                               f"{type(exc).__name__}: {_one_line(exc)} instead of a KnowledgeError")
                continue
            c.fail("model.differentiable", f"{c.who}: declares differentiable = False, but backward through the "
                                           f"{task.value} scores succeeded; raise a KnowledgeError there")
            continue
        try:
            (grad,) = torch.autograd.grad(scores.sum(), xg)
        except Exception as exc:  # noqa: BLE001
            c.fail("model.differentiable", f"{c.who}: backward through the {task.value} scores raised "
                                           f"{type(exc).__name__}: {_one_line(exc)}")
            continue
        if not bool(torch.isfinite(grad).all()) or float(grad.abs().max()) == 0.0:
            c.fail("model.differentiable", f"{c.who}: the {task.value} scores have no finite non-zero gradient "
                                           f"with respect to the waveform")


# ---------------------------------------------------------------------------------------------------------------
# Metrics and datasets
# ---------------------------------------------------------------------------------------------------------------


def check_metric(cls: type[Metric], params: dict[str, Any] | None = None, *, batch: int = 2, seconds: float = 1.0,
                 seed: int = 0, registry: Any = None) -> None:
    """Check a :class:`~sec4sr_core.Metric` class on synthetic benign / perturbed pairs. Raises ContractError."""
    __tracebackhide__ = True
    c = _Checker("metric", getattr(cls, "name", "") or cls.__qualname__)
    _check_registration(c, "metric", cls, registry)
    p = _check_params(c, cls, params)
    if not isinstance(getattr(cls, "unit", None), str):
        c.fail("metric.declaration", f"{c.who}: `unit` must be a str, got {getattr(cls, 'unit', None)!r}")
    if getattr(cls, "higher_is_better", None) not in (True, False, None):
        c.fail("metric.declaration", f"{c.who}: `higher_is_better` must be True, False or None")
    if p is None:
        c.done()
        return
    try:
        metric = _build(c, cls, p)
        benign = waves(batch, seconds, seed)
        g = torch.Generator().manual_seed(seed + 3)
        adv = (benign + 0.002 * torch.randn(benign.shape, generator=g)).clamp(-1, 1)
        b0, a0 = benign.clone(), adv.clone()
        with c.guard("metric.values", f"computing on a {tuple(benign.shape)} batch"):
            values = list(metric.compute(benign, adv))
        if not torch.equal(benign, b0) or not torch.equal(adv, a0):
            c.fail("metric.input", f"{c.who} modified its inputs in place")
        if len(values) != batch or not all(isinstance(v, (float, int)) and not isinstance(v, bool) for v in values):
            c.fail("metric.values", f"{c.who}: compute returned {values!r}, expected {batch} floats")
            raise _Abort
        with c.guard("metric.values", "computing on identical benign and adversarial audio"):
            metric.compute(benign, benign.clone())
        with c.guard("metric.batch", "computing on a batch of one"):
            single = list(metric.compute(benign[:1], adv[:1]))
        if len(single) != 1 or not _same_value(single[0], values[0]):
            c.fail("metric.batch", f"{c.who}: utterance 0 alone gives {single!r}, in a batch {values[0]!r}")
        again = list(metric.compute(benign, adv))
        if not all(_same_value(a, b, 0.0) for a, b in zip(again, values)):
            c.fail("metric.deterministic", f"{c.who}: two calls on the same input give {values} and {again}")
    except _Abort:
        pass
    c.done()


def _same_value(a: float, b: float, rtol: float = 1e-6) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=rtol, abs_tol=1e-9)


def check_dataset(cls: type[Dataset], params: dict[str, Any] | None = None, *, registry: Any = None) -> None:
    """Check a :class:`~sec4sr_core.Dataset` class built with ``params`` (e.g. ``{"root": folder}``): the standard
    splits, speaker roles, readable files and a stable fingerprint. Raises :class:`ContractError`."""
    __tracebackhide__ = True
    from sec4sr_core.sdk.audio import load_audio

    c = _Checker("dataset", getattr(cls, "name", "") or cls.__qualname__)
    _check_registration(c, "dataset", cls, registry)
    p = _check_params(c, cls, params)
    if p is None:
        c.done()
        return
    try:
        ds = _build(c, cls, p)
        splits: dict[str, list[Utterance]] = {}
        with c.guard("dataset.splits", "listing its splits"):
            names = list(ds.split_names())
        for name in sorted(set(names) | set(STANDARD_SPLITS)):
            with c.guard("dataset.splits", f"reading split {name!r}"):
                rows = ds.split(name)
            if not isinstance(rows, list) or not all(isinstance(u, Utterance) for u in rows):
                c.fail("dataset.splits", f"{c.who}: split {name!r} is not a list of Utterance")
                continue
            ids = [u.id for u in rows]
            if len(set(ids)) != len(ids):
                dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
                c.fail("dataset.splits", f"{c.who}: split {name!r} repeats utterance ids {dup}")
            splits[name] = rows
        try:
            ds.split("no-such-split")
            c.fail("dataset.splits", f"{c.who}: split('no-such-split') did not raise")
        except Sec4srError:
            pass
        except Exception as exc:  # noqa: BLE001
            c.fail("dataset.splits", f"{c.who}: an unknown split raised {type(exc).__name__}, not a Sec4srError")
        enrolled = ds.enrolled_speakers()
        if enrolled != sorted(enrolled):
            c.fail("dataset.speakers", f"{c.who}: enrolled_speakers() is not sorted")
        imposters = {u.speaker for s in ("imposter-dev", "imposter-test") for u in splits.get(s, [])}
        if imposters & set(enrolled):
            c.fail("dataset.speakers", f"{c.who}: imposter speakers {sorted(imposters & set(enrolled))[:3]} are enrolled")
        strangers = {u.speaker for u in splits.get("test", [])} - set(enrolled)
        if strangers:
            c.fail("dataset.speakers", f"{c.who}: test speakers {sorted(strangers)[:3]} are not enrolled")
        for name, rows in splits.items():
            if rows:
                try:
                    load_audio(rows[0].path)
                except Exception as exc:  # noqa: BLE001
                    c.fail("dataset.files", f"{c.who}: the first utterance of split {name!r} ({rows[0].path}) does "
                                            f"not load: {_one_line(exc)}")
        with c.guard("dataset.fingerprint", "computing its fingerprint"):
            f1, f2 = ds.fingerprint(), ds.fingerprint()
        if not isinstance(f1, str) or not f1 or f1 != f2:
            c.fail("dataset.fingerprint", f"{c.who}: fingerprint() gave {f1!r} then {f2!r}")
    except _Abort:
        pass
    c.done()


# ---------------------------------------------------------------------------------------------------------------
# Presets and registered components
# ---------------------------------------------------------------------------------------------------------------


def check_preset(name: str, registry: Any = None) -> None:
    """Check a registered preset: its component exists (of the preset's kind) and its parameters validate."""
    __tracebackhide__ = True
    from sec4sr_core.plugins.manager import get_registry
    from sec4sr_core.base.presets import Preset

    reg = registry or get_registry()
    c = _Checker("preset", name)
    entry = reg.entries["preset"].get(name)
    if entry is None:
        c.fail("preset.component", f"no preset {name!r} is registered")
        c.done()
        return
    preset = entry.load()
    if not isinstance(preset, Preset):
        c.fail("preset.component", f"preset {name!r} of {entry.distribution} is a {type(preset).__name__}, not a Preset")
    elif not _NAME.match(name):
        c.fail("component.name", f"preset name {name!r} is not a spec-safe id")
    else:
        try:
            reg.resolve(preset.kind, name)
        except Sec4srError as exc:
            c.fail("preset.component", f"preset {name!r} of {entry.distribution}: {_one_line(exc)}")
    c.done()


CHECKS: dict[str, Callable[..., None]] = {
    "attack": check_attack, "defense": check_defense, "model": check_model, "metric": check_metric,
    "dataset": check_dataset,
}


def check_registered(kind: str, name: str, params: dict[str, Any] | None = None, **options: Any) -> None:
    """Check the component registered as ``name`` of ``kind`` (or a preset), loading it from the registry."""
    __tracebackhide__ = True
    from sec4sr_core.plugins.manager import get_registry

    if kind == "preset":
        check_preset(name)
        return
    entry = get_registry().entries[kind].get(name)
    if entry is None:
        raise ContractError(kind, name, [Violation("component.unique", f"no {kind} {name!r} is registered")])
    try:
        cls = entry.load()
    except PluginError as exc:
        raise ContractError(kind, name, [Violation("component.load", str(exc))]) from None
    if not (entry.summary or "").strip():
        raise ContractError(kind, name, [Violation("component.summary", f"{kind} {name!r} of {entry.distribution} "
                                                                        f"has no summary")])
    CHECKS[kind](cls, params, **options)


def registered(*kinds: str) -> list[tuple[str, str]]:
    """``(kind, name)`` of every registered component of ``kinds`` (all kinds by default), for parametrising."""
    from sec4sr_core.plugins.manager import get_registry
    from sec4sr_core.plugins.registry import KINDS

    reg = get_registry()
    return [(k, n) for k in (kinds or KINDS) for n in reg.names(k)]


# ---------------------------------------------------------------------------------------------------------------
# The pytest plugin
# ---------------------------------------------------------------------------------------------------------------


class Contract:
    """What the ``sec4sr_contract`` fixture gives a test: the checks and the synthetic inputs they use."""

    RULES = RULES
    ContractError = ContractError
    check_attack = staticmethod(check_attack)
    check_defense = staticmethod(check_defense)
    check_model = staticmethod(check_model)
    check_metric = staticmethod(check_metric)
    check_dataset = staticmethod(check_dataset)
    check_preset = staticmethod(check_preset)
    check_registered = staticmethod(check_registered)
    tiny_system = staticmethod(tiny_system)
    waves = staticmethod(waves)
    TinyModel = TinyModel


try:  # the fixtures exist only where pytest does; the checks above work without it
    import pytest
except ImportError:  # pragma: no cover
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    @pytest.fixture
    def sec4sr_contract() -> Contract:
        """The contract kit: ``sec4sr_contract.check_defense(MyDefense)`` and friends."""
        return Contract()

    @pytest.fixture
    def sec4sr_plugin() -> Iterator[Callable[..., None]]:
        """Register inline plugins for one test: ``sec4sr_plugin(obj, name="mine")``; removed at teardown."""
        from sec4sr_core.plugins.manager import register_plugin, unregister_plugin

        names: list[str] = []

        def add(plugin: Any, name: str | None = None, distribution: str | None = None) -> None:
            key = name or getattr(plugin, "__name__", None) or f"inline-{len(names)}"
            register_plugin(plugin, key, distribution)
            names.append(key)

        yield add
        for key in reversed(names):
            unregister_plugin(key)

    def pytest_configure(config: Any) -> None:
        config.addinivalue_line("markers", "sec4sr_contract: a sec4sr plugin contract test")
