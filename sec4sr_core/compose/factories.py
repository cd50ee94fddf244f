"""Components from specs: the backbone with its stored weights, a defense chain, a dataset from a name or folder."""

from __future__ import annotations

from pathlib import Path

import torch

from sec4sr_core.base.errors import Sec4srError
from sec4sr_core.base.params import parse_chain, slug  # noqa: F401 - slug is re-exported here
from sec4sr_core.plugins.manager import get_registry
from sec4sr_core.sdk.interfaces import Dataset, Defense, SpeakerModel
from sec4sr_core.sdk.modelstore import home


def resolve_dataset(spec: str) -> Dataset:
    """A dataset from its spec (``embedded``, ``folder:root=...``) or from a folder path."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return get_registry().build("dataset", ("folder", {"root": spec}))
    if ":" not in spec and (path.is_absolute() or spec.startswith((".", "~")) or "/" in spec or "\\" in spec):
        raise Sec4srError(f"dataset folder not found: {path}")
    return get_registry().build("dataset", spec)


def load_model(spec: str, device: str = "cpu") -> SpeakerModel:
    """Build a backbone from its spec, load its weights from the model store, put it in eval mode on ``device``."""
    model = get_registry().build("model", spec)
    model.load_weights(home())
    return model.eval().to(device)


def build_defenses(chain: str) -> list[Defense]:
    reg = get_registry()
    return [reg.build("defense", part) for part in parse_chain(chain)]


def check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise Sec4srError("--device cuda was asked for, but no CUDA device is available")


def weights_digest(module: torch.nn.Module) -> str:
    """A short sha256 of a module's state (every parameter and buffer, by name, dtype, shape and bytes): the
    identity of the weights a model actually runs with, whatever format they were loaded from."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def system_digest(system: object) -> str:
    """A short sha256 of an enrolled system's state: its model's weights, task, speakers, enrolled embeddings and
    threshold (so a re-enrollment or a new threshold changes it)."""
    import hashlib

    h = hashlib.sha256()
    h.update(weights_digest(system.model).encode())  # type: ignore[attr-defined]
    h.update(f"|{system.task.value}|{','.join(system.speakers)}|{system.threshold!r}|".encode())  # type: ignore[attr-defined]
    enrolled = getattr(system, "enrolled", None)
    if enrolled is not None:
        h.update(enrolled.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
