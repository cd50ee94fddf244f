"""What the backbones that ``sec4sr train`` trains have in common.

A trainable neural backbone (AudioNet, x-vector, ECAPA) implements:

* :meth:`Trainable.build_classifier` — (re)build the training classifier for ``n`` classes;
* :meth:`Trainable.train_logits` — training logits (B, n) from ``final`` features;
* optionally :meth:`Trainable.train_loss` (cross-entropy by default; ECAPA uses AAM-softmax) and
  :meth:`Trainable.after_training` (x-vector fits its PLDA back-end there).

The generic loop in :mod:`sec4sr_core.study.training` uses only these names, so the core never imports this package.
The class count is read from a checkpoint before its weights are loaded (:meth:`adapt_to_checkpoint`), so a model
trained on any number of speakers loads without knowing that number in advance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Sequence

import torch

from sec4sr_core.sdk import NotTrainedError
from sec4sr_core.sdk import checkpoint_path, load_state, read_torch_file


def train_command(model: Any, tag: str = "") -> str:
    cmd = f"sec4sr train --model {model.name}"
    if tag.startswith("advt-"):
        rest = tag[len("advt-"):]
        attack, _, defense = rest.partition("+")
        cmd += f" --adversarial {attack}" + (f" --defense <{defense}>" if defense else "")
    return cmd


class Trainable:
    """Mixin for backbones trained by ``sec4sr train`` (see module docstring)."""

    needs_training: ClassVar[bool] = True
    #: default TrainConfig values for this backbone on the embedded corpus (epochs, lr, batch_size, crop_s, ...)
    train_defaults: ClassVar[dict[str, Any]] = {}

    def set_classes(self, class_ids: Sequence[str]) -> None:
        self.class_ids = list(class_ids)
        self.build_classifier(len(self.class_ids))

    def build_classifier(self, n: int) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def train_logits(self, final: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def train_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits, y)

    def after_training(self, dataset: Any, config: Any) -> dict[str, Any]:
        """Hook run once when training finishes (before the final checkpoint); returns extra statistics."""
        return {}

    def adapt_to_checkpoint(self, payload: dict[str, Any]) -> None:
        """Size the classifier for the checkpoint's classes before its state_dict is loaded."""
        ids = list(payload.get("class_ids", []))
        if ids:
            self.set_classes(ids)

    def load_weights(self, home: Path, tag: str = "") -> None:
        """Load the trained checkpoint (or the ``tag`` variant); NotTrainedError names the command to run."""
        path = checkpoint_path(self, home, tag)
        variant = f" (variant {tag!r})" if tag else ""
        if not path.exists():
            raise NotTrainedError(f"model {self.name!r}{variant} has no trained weights in {path.parent}; "
                                  f"run `{train_command(self, tag)}`")
        payload = read_torch_file(path)
        if not isinstance(payload, dict) or "state_dict" not in payload:
            from sec4sr_core.sdk import Sec4srError

            raise Sec4srError(f"checkpoint {path} is not a sec4sr checkpoint (no state_dict)")
        extra = payload.get("extra") or {}
        if not extra.get("complete", True):
            raise NotTrainedError(
                f"training of {self.name!r}{variant} stopped after epoch {extra.get('epoch')} of "
                f"{extra.get('epochs')}; run `{train_command(self, tag)}` again to resume it")
        self.adapt_to_checkpoint(payload)
        load_state(self, payload["state_dict"], str(path))
        self.class_ids = list(payload.get("class_ids", []))
