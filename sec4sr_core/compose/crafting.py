"""Crafting data for attacks that craft on held-out utterances (a universal perturbation, say).

Such an attack declares what it needs with :meth:`Attack.crafting_request` (dataset spec or None, split, size); it
never loads a dataset itself, since a plugin may import only the sdk. The core resolves that request here — the
request's dataset, or the dataset the attacked utterances come from when the request leaves it to the caller —
decodes the first ``size`` utterances of the split with :func:`sec4sr_core.sdk.audio.load_batch` at the attacked
length, and hands them over with :meth:`Attack.set_crafting` before ``run``::

    attack = get_registry().build("attack", spec)
    provide_crafting(attack, length=x.shape[-1], dataset=study_dataset)
    result = attack.run(oracle, x, y, targeted=...)

Decoded sets are kept per (dataset, split, size, length) within the process, so the batches of a study decode
them once; attacks must treat the tensor they are handed as read-only.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict

import torch

from sec4sr_core.base.errors import ParameterError
from sec4sr_core.compose.factories import resolve_dataset
from sec4sr_core.sdk.attack import Attack, CraftingRequest
from sec4sr_core.sdk.audio import load_batch
from sec4sr_core.sdk.interfaces import Dataset, Task

__all__ = ["DEFAULT_DATASET", "crafting_claims", "load_crafting", "provide_crafting"]

#: the dataset crafting sets come from when neither the request nor the caller names one
DEFAULT_DATASET = "embedded"

_KEEP = 8  # decoded crafting sets kept in the process
#: (dataset key, split, size, length) -> (the dataset object, weakly, or None for a spec; the waveforms)
_SETS: OrderedDict[tuple, tuple[weakref.ref | None, torch.Tensor]] = OrderedDict()


def _dataset_key(dataset: Dataset | str) -> tuple:
    """A spec is its own key; a built dataset is the object itself (checked through a weak reference on use)."""
    return ("object", id(dataset)) if isinstance(dataset, Dataset) else ("spec", dataset)


def _describe(dataset: Dataset | str) -> str:
    if isinstance(dataset, Dataset):
        root = getattr(dataset.params, "root", None)
        return str(root) if root is not None else dataset.name
    return dataset


def _crafting_utterances(request: CraftingRequest, source: Dataset | str, who: str) -> list:
    """The first ``request.size`` utterances of ``request.split`` of ``source``, checked."""
    ds = source if isinstance(source, Dataset) else resolve_dataset(source)
    if request.split not in ds.split_names():
        raise ParameterError(f"{who}: dataset {_describe(source)!r} has no split {request.split!r} to craft on "
                             f"(splits: {', '.join(ds.split_names())})")
    utts = ds.split(request.split)[: request.size]
    if not utts:
        raise ParameterError(f"{who}: split {request.split!r} of dataset {_describe(source)!r} is empty; "
                             f"choose another crafting split or dataset")
    return utts


def crafting_claims(utterances: list, speakers: list[str]) -> torch.Tensor:
    """SV claims (N,) for crafting utterances, built like the study's own SV trials: an utterance of an enrolled
    speaker claims that speaker (a genuine trial), any other claims an enrolled speaker chosen by a hash of its id
    (an imposter; the same for every batch, run and machine)."""
    import zlib

    index = {s: i for i, s in enumerate(speakers)}
    return torch.tensor([index.get(u.speaker, zlib.crc32(str(u.id).encode()) % len(speakers)) for u in utterances],
                        dtype=torch.int64)


def load_crafting(request: CraftingRequest, length: int, dataset: Dataset | str | None = None,
                  who: str = "attack") -> torch.Tensor:
    """The crafting waveforms (N, 1, length) float32 of ``request``: the first ``request.size`` utterances of
    ``request.split`` of ``request.dataset`` — or of ``dataset`` (a spec or a built :class:`Dataset`) when the
    request names none, or of :data:`DEFAULT_DATASET` when neither does. ``who`` names the attack in errors."""
    if length < 1:
        raise ParameterError(f"{who}: crafting length must be at least 1 sample, got {length}")
    source: Dataset | str = request.dataset if request.dataset is not None else (
        dataset if dataset is not None else DEFAULT_DATASET)
    key = (_dataset_key(source), request.split, int(request.size), int(length))
    if key in _SETS:
        ref, waves = _SETS[key]
        if ref is None or ref() is source:
            _SETS.move_to_end(key)
            return waves
    utts = _crafting_utterances(request, source, who)
    waves = load_batch([u.path for u in utts], length)
    _SETS[key] = (weakref.ref(source) if isinstance(source, Dataset) else None, waves)
    while len(_SETS) > _KEEP:
        _SETS.popitem(last=False)
    return waves


def provide_crafting(attack: Attack, length: int, dataset: Dataset | str | None = None, task: Task | str | None = None,
                     speakers: list[str] | None = None) -> torch.Tensor | None:
    """Hand ``attack`` its crafting waveforms (N, 1, length) when it declares a :meth:`~Attack.crafting_request`;
    ``dataset`` is where the attacked utterances come from (the default source). For SV with the system's enrolled
    ``speakers``, the crafting trials' own claims go with them (:func:`crafting_claims`).
    Returns the waveforms, or None for an attack that crafts on nothing (then nothing is done)."""
    request = attack.crafting_request()
    if request is None:
        return None
    waves = load_crafting(request, length, dataset, who=attack.name)
    source = request.dataset if request.dataset is not None else (dataset if dataset is not None else DEFAULT_DATASET)
    claims = None
    if task is not None and Task(task) == Task.SV and speakers:
        claims = crafting_claims(_crafting_utterances(request, source, attack.name), list(speakers))
    attack.set_crafting(waves, source=f"{_describe(source)}:{request.split}[:{request.size}]", claims=claims)
    return waves
