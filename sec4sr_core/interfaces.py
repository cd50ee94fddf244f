"""Typed interfaces of the five component kinds: Model, Defense, Attack, Metric, Dataset.

Conventions shared by every component:

* **One audio domain.** Waveforms are float32 tensors of shape (B, 1, T) with values in [-1, 1] at 16 kHz.
* **Feature levels.** A model declares ordered levels, ``"wave"`` first and ``"final"`` last (the frame-level
  features entering the network). Feature tensors are (B, frames, dims).
* **Scores** are (B, S) and **decisions** (B,) int64 with ``REJECT = -1``.
* **Parameters** are a pydantic :class:`~sec4sr_core.params.Params` subclass named ``Params`` on the class.

A component class carries ``name`` (registry key) and ``summary`` (one line); the registry reads both without
instantiating it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

import torch
from torch import nn

from .params import Params, validate

if TYPE_CHECKING:  # pragma: no cover
    from .oracle import Oracle

SAMPLE_RATE = 16000
REJECT = -1


class Task(str, enum.Enum):
    """The four recognition tasks."""

    CSI_E = "csi-e"  #: closed-set identification with enrollment
    CSI_NE = "csi-ne"  #: closed-set identification without enrollment (a classifier)
    SV = "sv"  #: speaker verification: accept (0) or reject (-1) a claimed identity
    OSI = "osi"  #: open-set identification: an enrolled speaker or reject (-1)

    @property
    def has_threshold(self) -> bool:
        return self in (Task.SV, Task.OSI)

    @property
    def closed_set(self) -> bool:
        return self in (Task.CSI_E, Task.CSI_NE)


class Knowledge(str, enum.Enum):
    """What an attack may see of the system (enforced by its :class:`~sec4sr_core.oracle.Oracle`)."""

    WHITE_BOX = "white-box"  #: scores, decisions and gradients
    SCORES = "score-based"  #: scores and decisions
    DECISIONS = "decision-based"  #: decisions only


class Component:
    """Mixin for registrable components: ``name``, ``summary``, validated ``params``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params

    @classmethod
    def make_params(cls, params: Params | dict[str, Any] | None = None, **kwargs: Any) -> Params:
        """Validate ``params`` (a Params instance, or a dict) updated with ``kwargs``."""
        if isinstance(params, Params):
            values = params.model_dump()
        else:
            values = dict(params or {})
        values.update(kwargs)
        return validate(cls.Params, cls.name or cls.__name__, values)

    @classmethod
    def describe(cls) -> str:
        if cls.summary:
            return cls.summary
        doc = (cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""


# --------------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------------


class SpeakerModel(Component, nn.Module):
    """A speaker-recognition backbone: waveform -> features at named levels -> embedding or logits.

    Subclasses set ``levels`` (ordered, ``"wave"`` first, ``"final"`` last), ``output`` (``"embedding"`` for models
    that score against enrolled speakers, ``"logits"`` for closed-set classifiers) and ``tasks``, and implement
    :meth:`to_level` and :meth:`head`. Every step must be differentiable and batched, and deterministic in ``eval()``.
    """

    levels: ClassVar[tuple[str, ...]] = ("wave", "final")
    output: ClassVar[str] = "embedding"
    tasks: ClassVar[tuple[Task, ...]] = (Task.CSI_E, Task.SV, Task.OSI)
    #: True when the model has no shipped weights and must be trained by ``sec4sr train`` first.
    needs_training: ClassVar[bool] = False

    def __init__(self, params: Params | dict[str, Any] | None = None, **kwargs: Any) -> None:
        nn.Module.__init__(self)
        self.params = self.make_params(params, **kwargs)
        #: class labels of a ``"logits"`` model (speaker ids, index = logit column)
        self.class_ids: list[str] = []

    # -- levels ------------------------------------------------------------------------------------------------------
    def check_level(self, level: str) -> str:
        if level not in self.levels:
            from .errors import ParameterError

            raise ParameterError(
                f"model {self.name!r} has no feature level {level!r} (levels: {', '.join(self.levels)})"
            )
        return level

    def to_level(self, x: torch.Tensor, src: str, dst: str) -> torch.Tensor:
        """Compute level ``dst`` from a tensor at level ``src`` (``src`` at or before ``dst``)."""
        raise NotImplementedError

    def head(self, final: torch.Tensor) -> torch.Tensor:
        """Map ``final`` features (B, frames, dims) to embeddings (B, D) or logits (B, C)."""
        raise NotImplementedError

    def embed(self, x: torch.Tensor, level: str = "wave") -> torch.Tensor:
        """Embedding (or logits) of ``x`` given at ``level``."""
        return self.head(self.to_level(x, level, "final"))

    def score(self, emb: torch.Tensor, enrolled: torch.Tensor) -> torch.Tensor:
        """Scores (B, S) of test embeddings (B, D) against enrolled embeddings (S, D); cosine by default."""
        emb = torch.nn.functional.normalize(emb, dim=-1)
        enrolled = torch.nn.functional.normalize(enrolled, dim=-1)
        return emb @ enrolled.T

    def enroll_embeddings(self, embs: torch.Tensor) -> torch.Tensor:
        """Combine a speaker's enrollment embeddings (N, D) into one (D,); the mean by default."""
        return embs.mean(dim=0)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.embed(wave, "wave")

    # -- weights -----------------------------------------------------------------------------------------------------
    def load_weights(self, home: Path) -> None:
        """Load trained or shipped weights. ``home`` is the model store (``$SEC4SR_HOME``).

        The default looks for the checkpoint ``sec4sr train`` writes and raises :class:`NotTrainedError` when a
        model that ``needs_training`` has none.
        """
        from .store_models import load_checkpoint

        load_checkpoint(self, home)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")


# --------------------------------------------------------------------------------------------------------------------
# Defenses
# --------------------------------------------------------------------------------------------------------------------


class Defense(Component, nn.Module):
    """An input transformation applied at one feature level of a model.

    ``level`` is ``"wave"`` for waveform defenses (input and output (B, 1, T) in [-1, 1]); a feature-level defense
    maps (B, frames, dims) to (B, frames', dims). ``differentiable=False`` defenses get BPDA (identity backward)
    automatically when gradients are needed; ``randomized=True`` ones draw from ``self.generator`` (seeded by
    :meth:`seed`) and should be attacked with EOT.
    """

    level: str = "wave"
    differentiable: ClassVar[bool] = True
    randomized: ClassVar[bool] = False
    #: levels the defense can act on: ``("wave",)`` or ``("feature",)`` (any non-wave level) or both
    acts_on: ClassVar[tuple[str, ...]] = ("wave",)

    def __init__(self, params: Params | dict[str, Any] | None = None, **kwargs: Any) -> None:
        nn.Module.__init__(self)
        self.params = self.make_params(params, **kwargs)
        level = getattr(self.params, "level", None)
        if level is not None:
            self.level = level
        self.generator: torch.Generator | None = None
        self._seed = 0

    def seed(self, seed: int, device: torch.device | str = "cpu") -> None:
        """Reset the defense's random stream (only meaningful when ``randomized``)."""
        self._seed = int(seed)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(self._seed)

    def rng(self, device: torch.device) -> torch.Generator:
        """The seeded generator on ``device`` (created with seed 0 when never seeded)."""
        if self.generator is None or self.generator.device != torch.device(device):
            self.seed(self._seed, device)
        assert self.generator is not None
        return self.generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def label(self) -> str:
        from .params import format_spec

        changed = {k: v for k, v in self.params.model_dump().items() if v != self.Params.model_fields[k].default}
        return format_spec(self.name, changed)


# --------------------------------------------------------------------------------------------------------------------
# Attacks
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class AttackResult:
    """What an attack returns, per utterance (B = batch size)."""

    adv: torch.Tensor  #: (B, 1, T) adversarial waveforms in [-1, 1]
    success: torch.Tensor  #: (B,) bool, by the attack's own criterion
    queries: torch.Tensor  #: (B,) int64 system queries spent
    decisions: torch.Tensor  #: (B,) int64 final decision of the attacked system on ``adv``
    extra: dict[str, Any] = field(default_factory=dict)


class Attack(Component):
    """An adversarial attack. It reaches the system only through an oracle of its ``knowledge`` level.

    Implement :meth:`run`. From Python, ``PGD(epsilon=0.002)(system, x, y)`` builds the oracle for you and returns the
    adversarial waveforms (the full :class:`AttackResult` is kept in ``attack.last_result``).
    """

    knowledge: ClassVar[Knowledge] = Knowledge.WHITE_BOX
    #: True when the attack bounds its perturbation by ``params.epsilon`` in L∞
    norm: ClassVar[str | None] = None

    def __init__(self, params: Params | dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.params = self.make_params(params, **kwargs)
        self.last_result: AttackResult | None = None

    def run(self, oracle: "Oracle", x: torch.Tensor, y: torch.Tensor, targeted: bool = False) -> AttackResult:
        """Attack ``x`` (B, 1, T). ``y`` is the true label (untargeted) or the target label (targeted)."""
        raise NotImplementedError

    def __call__(
        self,
        system: Any,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        targeted: bool = False,
        claims: torch.Tensor | None = None,
        eot: int = 1,
        seed: int = 0,
    ) -> torch.Tensor:
        from .oracle import make_oracle
        from .system import as_defended

        system = as_defended(system)
        if y is None:
            with torch.no_grad():
                y = system.decide(system(x, claims=claims))
        oracle = make_oracle(system, self.knowledge, claims=claims, eot=eot, seed=seed, n=x.shape[0])
        self.last_result = self.run(oracle, x, y, targeted=targeted)
        return self.last_result.adv


# --------------------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------------------


class Metric(Component):
    """A per-utterance measurement comparing benign and adversarial waveforms.

    :meth:`compute` takes two (B, 1, T) tensors in [-1, 1] and returns B floats. ``higher_is_better`` tells reports
    how to colour it; ``unit`` is shown next to the name.
    """

    unit: ClassVar[str] = ""
    higher_is_better: ClassVar[bool | None] = None

    def __init__(self, params: Params | dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.params = self.make_params(params, **kwargs)

    def compute(self, benign: torch.Tensor, adv: torch.Tensor) -> list[float]:  # pragma: no cover - interface
        raise NotImplementedError


# --------------------------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Utterance:
    """One audio file of a dataset."""

    path: Path
    speaker: str
    id: str  #: unique within the dataset, used in result rows and output paths


class Dataset(Component):
    """A speech corpus with named splits.

    The splits the tasks use: ``enroll``, ``dev`` (genuine trials for thresholds), ``test`` (attack source),
    ``imposter-dev``, ``imposter-test`` (speakers not enrolled), ``train`` and ``heldout`` (training and testing a
    closed-set classifier). ``enrolled_speakers()`` lists the speakers of ``enroll`` in label order.
    """

    def __init__(self, params: Params | dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.params = self.make_params(params, **kwargs)

    def split(self, name: str) -> list[Utterance]:  # pragma: no cover - interface
        raise NotImplementedError

    def split_names(self) -> Sequence[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def enrolled_speakers(self) -> list[str]:
        return sorted({u.speaker for u in self.split("enroll")})

    def speakers(self, split: str) -> list[str]:
        return sorted({u.speaker for u in self.split(split)})

    def fingerprint(self) -> str:
        """A short hash of the dataset's identity — split membership plus each file's size and modification time —
        used to key cached enrollments, so editing a file re-enrolls."""
        import hashlib

        h = hashlib.sha256()
        for name in self.split_names():
            for u in self.split(name):
                try:
                    st = u.path.stat()
                    stamp = f"{st.st_size}|{st.st_mtime_ns}"
                except OSError:
                    stamp = "missing"
                h.update(f"{name}|{u.id}|{u.speaker}|{u.path.name}|{stamp}".encode())
        return h.hexdigest()[:12]
