"""Checks of what the Python API is handed, so that a wrong tensor fails at once with one clear line.

The one audio domain is float32 (B, 1, T) in [-1, 1], finite, on the model's device; labels, targets and claims are
integer tensors (B,). Anything else — float64 or int16 samples, a 1-D tensor (which would be read as T one-sample
utterances), NaN, samples beyond ±1, a batch on the wrong device, one label too few — raises
:class:`~sec4sr_core.base.errors.ParameterError` naming the argument, what it got and how to fix it.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from sec4sr_core.base.errors import ParameterError
from sec4sr_core.base.types import REJECT, Task

__all__ = ["check_system_options", "check_waves"]


def _fix_for_dtype(dtype: torch.dtype, what: str) -> str:
    if dtype == torch.int16:
        return f"{what}.float() / 32768"
    if dtype in (torch.int32, torch.int64, torch.uint8, torch.int8):
        return f"scale {what} to [-1, 1] and call .float()"
    return f"{what}.float()"


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
    return type(value).__name__


def check_waves(
    x: Any,
    labels: Any = None,
    device: torch.device | str | None = None,
    what: str = "x",
    *,
    claims: Any = None,
    classes: int | None = None,
    labels_what: str = "labels",
) -> None:
    """Refuse anything but a batch of waveforms ``x`` (B, 1, T) float32 in [-1, 1], finite, on ``device`` (when
    given), with ``labels`` and ``claims`` (when given) integer tensors (B,) of values ≥ −1 (−1 = reject) and below
    ``classes`` (when given). ``what`` and ``labels_what`` are the argument names the messages use. Raises
    :class:`ParameterError`; returns nothing."""
    if not isinstance(x, torch.Tensor):
        hint = " (torch.from_numpy(a).float())" if type(x).__module__ == "numpy" else ""
        raise ParameterError(f"{what} must be a torch.Tensor of shape (B, 1, T), float32 in [-1, 1]; got "
                             f"{type(x).__name__}{hint}")
    shape = tuple(x.shape)
    if x.dim() != 3 or x.shape[1] != 1:
        if x.dim() == 1:
            hint = f"for one utterance use {what}.reshape(1, 1, -1)"
        elif x.dim() == 2:
            hint = f"for a batch of B utterances (B, T) use {what}.unsqueeze(1)"
        elif x.dim() == 3:
            hint = f"downmix channels with {what}.mean(dim=1, keepdim=True)"
        else:
            hint = "give a batch of mono waveforms"
        raise ParameterError(f"{what} must have shape (B, 1, T) — a batch of mono waveforms — got {shape}; {hint}")
    if x.shape[0] == 0 or x.shape[2] == 0:
        raise ParameterError(f"{what} is empty (shape {shape}); give at least one utterance of at least one sample")
    if x.dtype != torch.float32:
        raise ParameterError(f"{what} must be float32 samples in [-1, 1], got {str(x.dtype).replace('torch.', '')}; "
                             f"convert with {_fix_for_dtype(x.dtype, what)}")
    if device is not None:
        want = torch.device(device)
        have = x.device
        if have.type != want.type or (want.index is not None and have.index is not None and have.index != want.index):
            raise ParameterError(f"{what} is on {have} but the model is on {want}; move it with {what}.to('{want}')")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ParameterError(f"{what} holds {bad} NaN or infinite sample(s); every sample must be finite, in [-1, 1]")
    peak = float(x.detach().abs().max())
    if peak > 1.0:
        raise ParameterError(f"{what} leaves [-1, 1] (max |{what}| = {peak:.4g}); samples are amplitudes in [-1, 1]: "
                             f"rescale it (e.g. {what} / {what}.abs().max()) or clip it ({what}.clamp(-1, 1))")
    b = x.shape[0]
    for name, value in ((labels_what, labels), ("claims", claims)):
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise ParameterError(f"{name} must be an integer torch.Tensor of shape ({b},), one per utterance of "
                                 f"{what}; got {type(value).__name__} (torch.tensor(values))")
        if value.dtype == torch.bool or value.is_floating_point() or value.is_complex():
            raise ParameterError(f"{name} must be an integer tensor (speaker indices, −1 = reject); got "
                                 f"{_describe(value)}; convert with {name}.long()")
        if tuple(value.shape) != (b,):
            raise ParameterError(f"{name} must have shape ({b},) — one per utterance of {what} {shape} — got "
                                 f"{tuple(value.shape)}")
        if b and int(value.min()) < REJECT:
            raise ParameterError(f"{name} holds {int(value.min())}; a label is a speaker index ≥ 0 or −1 (reject)")
        if classes is not None and b and int(value.max()) >= classes:
            raise ParameterError(f"{name} holds {int(value.max())}, but the system has {classes} speaker(s) "
                                 f"(indices 0..{classes - 1})")


def check_system_options(task: Any, device: Any, threshold: Any = None) -> Task:
    """Check the options of :func:`sec4sr_core.api.load_system`: ``task`` one of csi-e, csi-ne, sv, osi (returned as
    a :class:`Task`), ``device`` 'cpu', 'cuda' or 'cuda:N', ``threshold`` None or a finite number (score units)."""
    try:
        parsed = Task(task)
    except ValueError:
        raise ParameterError(f"task {task!r} is not a task; give one of {', '.join(t.value for t in Task)}") from None
    text = str(device)
    if not (text in ("cpu", "cuda") or re.fullmatch(r"cuda:\d+", text)):
        raise ParameterError(f"device {text!r} is not a device sec4sr runs on; give 'cpu', 'cuda' or 'cuda:N'")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise ParameterError(f"threshold {threshold!r} must be a finite number (score units) or None")
    return parsed
