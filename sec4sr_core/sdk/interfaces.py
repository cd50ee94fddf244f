"""Typed interfaces of the component kinds Model, Defense, Metric, Dataset (Attack: :mod:`sec4sr_core.sdk.attack`).

Conventions shared by every component:

* **One audio domain.** Waveforms are float32 tensors of shape (B, 1, T) with values in [-1, 1] at 16 kHz.
* **Feature levels.** A model declares ordered levels, ``"wave"`` first and ``"final"`` last (the frame-level
  features entering the network). Feature tensors are (B, frames, dims).
* **Scores** are (B, S) and **decisions** (B,) int64 with ``REJECT = -1``.
* **Parameters** are a pydantic :class:`~sec4sr_core.base.params.Params` subclass named ``Params`` on the class.

A component class carries ``name`` (registry key) and ``summary`` (one line); the registry reads both without
instantiating it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from sec4sr_core.base.errors import ParameterError
from sec4sr_core.base.params import Params, validate
from sec4sr_core.base.types import REJECT, SAMPLE_RATE, Knowledge, Task, Utterance

__all__ = [
    "REJECT", "SAMPLE_RATE", "Component", "Dataset", "Defense", "Knowledge", "Metric", "SpeakerModel", "Task",
    "Utterance",
]

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

    A subclass declares its **stages**: the ordered feature levels after ``"wave"``, each with the method that
    computes it from the previous level, ``"final"`` last (the frame-level features entering the network)::

        stages = (("raw", "mfcc"), ("delta", "add_deltas"), ("cmvn", "sliding_cmn"), ("final", None))

    ``mfcc(wave)`` maps (B, 1, T) to (B, frames, dims); each later method maps the previous level's tensor to its own;
    ``None`` names the previous level's tensor again unchanged (a level a defense may target). ``levels`` follows:
    ``("wave", "raw", "delta", "cmvn", "final")``. The base class owns the walk (:meth:`to_level`): it validates both
    level names and raises :class:`~sec4sr_core.base.errors.ParameterError` for an unknown level or a walk backwards.
    A subclass also sets ``output`` (``"embedding"`` for models that score against enrolled speakers, ``"logits"`` for
    closed-set classifiers) and ``tasks``, and implements :meth:`head`. Every stage must be differentiable and
    batched, and deterministic in ``eval()``.
    """

    #: ordered ``(level, method name or None)`` pairs after ``"wave"``, ``"final"`` last; sets ``levels``
    stages: ClassVar[tuple[tuple[str, str | None], ...]] = ()
    #: ordered feature levels, ``"wave"`` first and ``"final"`` last: ``("wave",)`` + the names in ``stages``
    levels: ClassVar[tuple[str, ...]] = ("wave", "final")
    output: ClassVar[str] = "embedding"
    tasks: ClassVar[tuple[Task, ...]] = (Task.CSI_E, Task.SV, Task.OSI)
    #: True when the model has no shipped weights and must be trained by ``sec4sr train`` first.
    needs_training: ClassVar[bool] = False
    #: False when the backbone gives no gradient (e.g. an ONNX graph run by onnxruntime): white-box attacks are
    #: refused before crafting, score- and decision-based attacks still run.
    differentiable: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Check a class' own ``stages`` table and derive ``levels`` from it. A malformed table is a TypeError when
        the class is defined (the registry reports the plugin as broken, with the message)."""
        super().__init_subclass__(**kwargs)
        if "stages" not in cls.__dict__:
            inherited = ("wave", *(level for level, _ in cls.stages))
            if "levels" in cls.__dict__ and cls.stages and tuple(cls.levels) != inherited:
                raise TypeError(f"{cls.__qualname__} sets levels {cls.levels} but inherits stages for {inherited}; "
                                f"declare its stages instead")
            return
        where = f"{cls.__qualname__}.stages"
        stages = tuple(tuple(pair) if isinstance(pair, (tuple, list)) else (pair,) for pair in cls.stages)
        if any(len(pair) != 2 or not isinstance(pair[0], str) for pair in stages):
            raise TypeError(f"{where}: every stage is a (level, method name or None) pair, got {cls.stages!r}")
        names = tuple(level for level, _ in stages)
        if not names or names[-1] != "final" or "wave" in names or len(set(names)) != len(names):
            raise TypeError(f"{where}: the levels after 'wave' must be distinct and end with 'final', got {names}")
        for level, method in stages:
            if method is not None and not callable(getattr(cls, method, None)):
                raise TypeError(f"{where}: level {level!r} names the method {method!r}, which "
                                f"{cls.__qualname__} does not define")
        if "levels" in cls.__dict__ and tuple(cls.levels) != ("wave", *names):
            raise TypeError(f"{cls.__qualname__} sets levels {cls.levels} but its stages give {('wave', *names)}; "
                            f"declare the stages only")
        cls.stages = stages
        cls.levels = ("wave", *names)

    def __init__(self, params: Params | dict[str, Any] | None = None, **kwargs: Any) -> None:
        nn.Module.__init__(self)
        self.params = self.make_params(params, **kwargs)
        #: class labels of a ``"logits"`` model (speaker ids, index = logit column)
        self.class_ids: list[str] = []

    # -- levels ------------------------------------------------------------------------------------------------------
    def _level_error(self, message: str) -> Exception:
        return ParameterError(f"model {self.name!r} {message}; its levels, in order: {' -> '.join(self.levels)}")

    def check_level(self, level: str) -> str:
        """``level`` itself when the model has it, else :class:`ParameterError` naming the model and its levels."""
        if level not in self.levels:
            raise self._level_error(f"has no feature level {level!r}")
        return level

    def check_walk(self, src: str, dst: str) -> tuple[int, int]:
        """Positions ``(i, j)`` of ``src`` and ``dst`` in ``levels``; :class:`ParameterError` for an unknown level or
        ``dst`` before ``src``."""
        for level in (src, dst):
            if level not in self.levels:
                raise self._level_error(f"has no feature level {level!r} (to_level from {src!r} to {dst!r})")
        i, j = self.levels.index(src), self.levels.index(dst)
        if i > j:
            raise self._level_error(f"cannot go back from level {src!r} to {dst!r}: levels only go forward")
        return i, j

    def to_level(self, x: torch.Tensor, src: str, dst: str) -> torch.Tensor:
        """Compute level ``dst`` from ``x`` at level ``src`` by running the stages after ``src`` up to ``dst`` in
        order; ``src == dst`` returns ``x`` itself. An unknown level, or ``dst`` before ``src``, raises
        :class:`~sec4sr_core.base.errors.ParameterError`."""
        i, j = self.check_walk(src, dst)
        if len(self.stages) != len(self.levels) - 1:
            raise NotImplementedError(f"{type(self).__qualname__} declares no stages for its levels {self.levels}: "
                                      f"set `stages` (or override to_level)")
        for _, method in self.stages[i:j]:
            if method is not None:
                x = getattr(self, method)(x)
        return x

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
        from sec4sr_core.sdk.modelstore import load_checkpoint

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
        from sec4sr_core.base.params import format_spec

        changed = {k: v for k, v in self.params.model_dump().items() if v != self.Params.model_fields[k].default}
        return format_spec(self.name, changed)


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


class Dataset(Component):
    """A speech corpus with named splits.

    The splits the tasks use: ``enroll``, ``dev`` (genuine trials for thresholds), ``test`` (attack source),
    ``imposter-dev``, ``imposter-test`` (speakers not enrolled), ``train`` and ``heldout`` (training and testing a
    closed-set classifier). ``enrolled_speakers()`` lists the speakers of ``enroll`` in label order.

    Optional methods the core uses when a dataset has them (found with ``hasattr``): ``sv_trials()`` — a standard
    verification trial list ``[(label 1/0, enroll utterance, test utterance), ...]`` (``sec4sr evaluate`` scores it
    and prints EER and minDCF); ``cohort()`` — utterances of speakers outside every trial, the AS-Norm cohort;
    ``loudness()`` — RMS level in dBFS per speaker (``{speaker: dBFS}``), printed by ``sec4sr evaluate``.
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
