"""The model store: trained checkpoints and enrolled systems, found again by name.

Layout under ``$SEC4SR_HOME`` (default ``~/.cache/sec4sr``)::

    models/<model>-<params hash>.pt            state_dict (+ metadata) written by ``sec4sr train``
    systems/<model>-<params hash>-<dataset fingerprint>.pt   enrollment: speakers, embeddings, thresholds

Checkpoints load with ``torch.load(..., weights_only=True)``; a file of the wrong shape or format gets a clear
error naming the mismatching keys.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from sec4sr_core.base.errors import NotTrainedError, Sec4srError


def home() -> Path:
    """The model store folder (``$SEC4SR_HOME`` or ``~/.cache/sec4sr``)."""
    return Path(os.environ.get("SEC4SR_HOME") or Path.home() / ".cache" / "sec4sr")


def params_hash(params: Any) -> str:
    data = json.dumps(params.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(data.encode()).hexdigest()[:10]


def checkpoint_path(model: Any, root: Path | None = None, tag: str = "") -> Path:
    """Where the weights of ``model`` (with its parameters) live. ``tag`` names a variant trained differently,
    e.g. ``advt-pgd`` for adversarial training, so variants never overwrite the naturally trained model."""
    suffix = f"-{tag}" if tag else ""
    return (root or home()) / "models" / f"{model.name}-{params_hash(model.params)}{suffix}.pt"


def save_checkpoint(
    model: Any, root: Path | None = None, extra: dict[str, Any] | None = None, tag: str = ""
) -> Path:
    """Save ``model``'s weights (and ``class_ids``) where :func:`load_checkpoint` finds them; atomic rename."""
    path = checkpoint_path(model, root, tag)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "state_dict": model.state_dict(),
        "class_ids": list(getattr(model, "class_ids", [])),
        "model": model.name,
        "params": model.params.model_dump(mode="json"),
        "extra": extra or {},
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a state_dict, refusing missing, unexpected or mis-shaped keys with one readable message."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append("missing keys: " + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected[:8]) + (" ..." if len(unexpected) > 8 else ""))
    if shapes:
        problems.append("shape mismatch: " + "; ".join(shapes[:8]))
    if problems:
        raise Sec4srError(f"checkpoint {source} does not fit model: " + " | ".join(problems))
    model.load_state_dict(state)


def read_torch_file(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise Sec4srError(f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None


def load_checkpoint(model: Any, root: Path | None = None, tag: str = "") -> bool:
    """Load the stored checkpoint of ``model`` if one exists. Returns whether one was loaded.

    Raises :class:`NotTrainedError` when the model ``needs_training`` (or a ``tag`` variant is asked for) and
    nothing is stored.
    """
    path = checkpoint_path(model, root, tag)
    if not path.exists():
        if getattr(model, "needs_training", False) or tag:
            variant = f" (variant {tag!r})" if tag else ""
            raise NotTrainedError(
                f"model {model.name!r}{variant} has no trained weights in {path.parent}; "
                f"run `sec4sr train --model {model.name}`"
            )
        return False
    payload = read_torch_file(path)
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise Sec4srError(f"checkpoint {path} is not a sec4sr checkpoint (no state_dict)")
    if hasattr(model, "adapt_to_checkpoint"):  # e.g. a classifier whose output size is the trained speaker count
        model.adapt_to_checkpoint(payload)
    load_state(model, payload["state_dict"], str(path))
    model.class_ids = list(payload.get("class_ids", []))
    return True
