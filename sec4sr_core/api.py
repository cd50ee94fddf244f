"""The Python API: components by name, systems behind defense chains, enrolled systems ready to attack, trials as
tensors, and any torch embedding network as a backbone (:func:`wrap`)."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import torch
from pydantic import Field

from sec4sr_core.base.errors import ParameterError
from sec4sr_core.base.params import Params
from sec4sr_core.base.types import DEFAULT_LENGTH_S, SAMPLE_RATE, Task
from sec4sr_core.compose.enroll import build_system, task_trials
from sec4sr_core.compose.factories import (
    build_defenses,
    load_model,
    resolve_dataset,
    weights_digest,
)
from sec4sr_core.plugins.manager import get_registry
from sec4sr_core.sdk.attack import Attack
from sec4sr_core.sdk.audio import load_batch
from sec4sr_core.sdk.checks import check_system_options
from sec4sr_core.sdk.interfaces import Defense, SpeakerModel
from sec4sr_core.sdk.system import DefendedSystem, SpeakerSystem


def registry():
    """The registry of every loaded plugin's components."""
    return get_registry()


def attack(spec: str, **params: Any) -> Attack:
    """An attack by name or preset, e.g. ``attack("pgd", epsilon=0.002)`` or ``attack("pgd-10")``."""
    return registry().build("attack", spec, **params)


def defense(spec: str, **params: Any) -> Defense:
    """A defense by name or preset, e.g. ``defense("qt", q=512)``."""
    return registry().build("defense", spec, **params)


def defend(system: Any, chain: str, order: str = "sequential"):
    """``system`` behind a defense chain spec such as ``"qt:q=512+at:snr=30"``."""
    base = system.system if isinstance(system, DefendedSystem) else system
    if not isinstance(base, SpeakerSystem):
        raise TypeError("defend() needs a SpeakerSystem")
    from sec4sr_core.study.certify import defended_or_smoothed  # `smooth` in the chain: the majority-vote system

    return defended_or_smoothed(base, build_defenses(chain), order)


def load_system(model: str | SpeakerModel = "ge2e", task: str = "csi-e", dataset: str = "embedded",
                device: str = "cpu", threshold: float | None = None):
    """An enrolled system ready to attack (enrollment and thresholds come from the model store). ``model`` is a
    backbone spec or a :class:`SpeakerModel` instance, e.g. one made by :func:`wrap`."""
    task = check_system_options(task, device, threshold)  # ParameterError for a bad task, device or threshold
    if isinstance(model, SpeakerModel):
        m = model.eval().to(device)
        if isinstance(m, WrappedModel):  # enrollments are cached by params: key them on the weights in use now
            m.params = m.params.model_copy(update={"weights": weights_digest(m.net)})
    elif isinstance(model, str):
        m = load_model(model, device)
    else:
        raise ParameterError(f"model must be a backbone spec (str) or a SpeakerModel (see sec4sr.wrap), "
                             f"got {type(model).__name__}")
    system, _ = build_system(m, task, resolve_dataset(dataset), threshold=threshold)
    return system


class Trials(NamedTuple):
    """What :func:`load_trials` returns: ``x, y, claims = load_trials(...)``."""

    #: (B, 1, T) float32 in [-1, 1] at 16 kHz
    waves: torch.Tensor
    #: (B,) int64: index of the true speaker among the enrolled ones, −1 = imposter (SV: 0 = genuine, −1)
    labels: torch.Tensor
    #: (B,) int64 claimed speaker index for SV, else None
    claims: torch.Tensor | None


def load_trials(dataset: str = "embedded", task: str = "csi-e", split: str = "test", limit: int | None = None,
                seed: int = 0, length_s: float = DEFAULT_LENGTH_S, device: str = "cpu", system: Any = None) -> Trials:
    """The benign trials of ``task`` on ``dataset`` as tensors, in the seeded order ``sec4sr run`` uses.

    ``split``: ``"test"`` (genuine ``test`` + ``imposter-test``) or ``"dev"`` (``dev`` + ``imposter-dev``); CSI-NE
    always uses ``heldout``. Labels index ``system.speakers`` when a system is given (needed for a closed-set
    classifier's class order), else the dataset's enrolled speakers — the order :func:`load_system` enrolls in.
    ``length_s`` crops or zero-pads every utterance (seconds); ``limit`` keeps the first N trials."""
    parsed = check_system_options(task, device)
    if split not in ("test", "dev"):
        raise ParameterError(f"split {split!r}: load_trials takes 'test' or 'dev'")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ParameterError(f"limit {limit!r} must be a positive integer or None")
    if isinstance(length_s, bool) or not isinstance(length_s, (int, float)) or not 0.01 <= length_s <= 600:
        raise ParameterError(f"length_s {length_s!r} must be a number of seconds in [0.01, 600]")
    ds = resolve_dataset(dataset)
    base = system.system if isinstance(system, DefendedSystem) else system
    speakers = list(base.speakers) if base is not None else ds.enrolled_speakers()
    trials = task_trials(parsed, ds, speakers, seed, limit, genuine_split=split, imposter_split=f"imposter-{split}")
    x = load_batch([u.path for u in trials.utterances], int(round(length_s * SAMPLE_RATE))).to(device)
    claims = None if trials.claims is None else trials.claims.to(device)
    return Trials(x, trials.labels.to(device), claims)


class WrappedParams(Params):
    label: str = Field("wrapped", description="the name enrollments and result rows show")
    weights: str = Field("", description="digest of the wrapped module's weights (set by load_system)")


class WrappedModel(SpeakerModel):
    """Any torch embedding network ((B, T) waveform -> (B, D)) as a backbone, cosine-scored.

    Its only feature level after ``wave`` is ``final``, the waveform itself (B, 1, T): the network's front-end is
    inside the module, so wave-level defenses apply and feature-level ones have nothing to act on."""

    name = "wrapped"
    Params = WrappedParams
    stages = (("final", None),)
    tasks: ClassVar[tuple[Task, ...]] = (Task.CSI_E, Task.CSI_NE, Task.SV, Task.OSI)

    def __init__(self, module: torch.nn.Module, params: Any = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.net = module
        self.name = self.params.label  # type: ignore[misc]  # per instance: enrollment files are keyed by it

    def head(self, final: torch.Tensor) -> torch.Tensor:
        if final.dim() != 3 or final.shape[1] != 1:
            raise ParameterError(f"model {self.name!r} takes waves (B, 1, T), got {tuple(final.shape)}")
        out = self.net(final[:, 0, :])
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != final.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ParameterError(f"wrapped module must map (B, T) to embeddings (B, D); for B={final.shape[0]} it "
                                 f"returned {shape}")
        return out

    def load_weights(self, home: Any) -> None:  # the module arrives with its weights
        return None


def wrap(module: torch.nn.Module, name: str = "wrapped") -> WrappedModel:
    """A backbone for all four tasks from any torch module mapping waves (B, T) in [-1, 1] at 16 kHz to embeddings
    (B, D): cosine scoring, enrollment by the mean embedding through the normal path (``load_system(wrap(net))``).
    ``name`` keys its cached enrollments (together with a digest of the weights) and labels its results."""
    if not isinstance(module, torch.nn.Module):
        raise ParameterError(f"wrap() needs a torch.nn.Module mapping (B, T) to (B, D), got {type(module).__name__}")
    if not isinstance(name, str) or not name or any(c in name for c in "/\\:,= "):
        raise ParameterError(f"wrap(): name {name!r} must be a non-empty word without / \\ : , = or spaces")
    return WrappedModel(module, label=name).eval()
