"""SpeechBrain's feature pipeline re-implemented in torch (no ``speechbrain`` import), batched and differentiable.

* :class:`SpeechBrainFbank` = ``speechbrain.lobes.features.Fbank`` (deltas and context off, frozen filters):
  ``STFT`` (Hamming window of ``win_length`` ms, periodic, ``hop_length`` ms, ``n_fft`` points, centred with zero
  padding), ``spectral_magnitude(power=1)`` (|X|², the power spectrum), ``Filterbank``: triangular filters whose
  centres are equally spaced on the mel scale ``2595 log10(1 + f/700)`` between ``f_min`` and ``f_max`` and whose
  half-width on *both* sides is the distance (Hz) from the previous centre — SpeechBrain's construction, not a
  classical mel triangle — over the linear frequency axis ``linspace(0, sr//2, n_fft//2 + 1)``; then the dB
  conversion ``10 log10(max(x, amin)) - 10 log10(max(amin, ref_value))`` clipped from below at each utterance's
  maximum minus ``top_db`` (a per-sentence floor, so utterances stay independent of their batch).
* :func:`sentence_norm` = ``speechbrain.processing.features.InputNormalization(norm_type="sentence")`` on full-length
  inputs: each utterance's mean over frames removed (and its std divided out when ``std_norm``).
* :func:`read_hyperparams` reads a SpeechBrain ``hyperparams.yaml`` (HyperPyYAML tags ``!new:``, ``!name:``,
  ``!ref <key>`` ...) as plain data: a tagged node becomes ``{"__tag__": "!new:module.Class", **arguments}``.

Waveforms are (B, 1, T) or (B, T) in [-1, 1] at 16 kHz; features are (B, frames, n_mels) with
``frames = T // hop + 1``.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sec4sr_core.sdk import ParameterError


def sb_to_mel(hz: float) -> float:
    """SpeechBrain's mel scale (``Filterbank._to_mel``)."""
    return 2595 * math.log10(1 + hz / 700)


def sb_to_hz(mel: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`sb_to_mel` (``Filterbank._to_hz``)."""
    return 700 * (10 ** (mel / 2595) - 1)


def sb_filterbank_matrix(n_mels: int, n_fft: int, sample_rate: int, f_min: float, f_max: float) -> torch.Tensor:
    """SpeechBrain's frozen triangular filterbank (n_fft//2 + 1, n_mels), built in float32 like the original."""
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ParameterError(f"speechbrain fbank: need 0 <= f_min < f_max <= {sample_rate / 2}, got f_min={f_min}, "
                             f"f_max={f_max}")
    mel = torch.linspace(sb_to_mel(f_min), sb_to_mel(f_max), n_mels + 2)
    hz = sb_to_hz(mel)
    band = (hz[1:] - hz[:-1])[:-1]  # (n_mels,) distance from the previous centre
    f_central = hz[1:-1]
    n_stft = n_fft // 2 + 1
    all_freqs = torch.linspace(0, sample_rate // 2, n_stft).repeat(n_mels, 1)  # (n_mels, n_stft)
    f_c = f_central.repeat(n_stft, 1).transpose(0, 1)
    b = band.repeat(n_stft, 1).transpose(0, 1)
    slope = (all_freqs - f_c) / b
    return torch.max(torch.zeros(1), torch.min(slope + 1.0, -slope + 1.0)).transpose(0, 1).contiguous()


class SpeechBrainFbank(nn.Module):
    """``speechbrain.lobes.features.Fbank`` (see module docstring): (B, 1, T) -> (B, T // hop + 1, n_mels) dB."""

    def __init__(self, n_mels: int = 40, sample_rate: int = 16000, f_min: float = 0.0, f_max: float | None = None,
                 n_fft: int = 400, win_length: float = 25.0, hop_length: float = 10.0, amin: float = 1e-10,
                 ref_value: float = 1.0, top_db: float = 80.0) -> None:
        super().__init__()
        if f_max is None:
            f_max = sample_rate // 2
        self.win = int(round(sample_rate / 1000.0 * win_length))
        self.hop = int(round(sample_rate / 1000.0 * hop_length))
        if not 0 < self.win <= n_fft:
            raise ParameterError(f"speechbrain fbank: window of {self.win} samples must be in 1..n_fft ({n_fft})")
        self.n_fft, self.n_mels = n_fft, n_mels
        self.amin, self.top_db = amin, top_db
        self.db_offset = 10.0 * math.log10(max(amin, ref_value))
        self.register_buffer("window", torch.hamming_window(self.win), persistent=False)
        self.register_buffer("fbank", sb_filterbank_matrix(n_mels, n_fft, sample_rate, f_min, f_max),
                             persistent=False)

    def power(self, wave: torch.Tensor) -> torch.Tensor:
        """Power spectrogram (B, frames, n_fft//2 + 1) of (B, 1, T) or (B, T) waves."""
        x = wave.reshape(wave.shape[0], -1)
        spec = torch.stft(x, self.n_fft, self.hop, self.win, self.window.to(x.dtype), center=True,
                          pad_mode="constant", normalized=False, onesided=True, return_complex=True)
        return (spec.real.pow(2) + spec.imag.pow(2)).transpose(1, 2)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        mel = self.power(wave) @ self.fbank.to(wave.dtype)
        db = 10.0 * torch.log10(mel.clamp_min(self.amin)) - self.db_offset
        floor = db.amax(dim=(-2, -1), keepdim=True) - self.top_db
        return torch.max(db, floor)


def sentence_norm(feats: torch.Tensor, std_norm: bool = False, eps: float = 1e-10) -> torch.Tensor:
    """``InputNormalization(norm_type="sentence")`` of full-length (B, frames, dims) features."""
    mean = feats.mean(dim=1, keepdim=True)
    if not std_norm:
        return feats - mean
    std = (feats - mean).pow(2).mean(dim=1, keepdim=True).sqrt()
    return (feats - mean) / std.clamp_min(eps)


# --------------------------------------------------------------------------------------------------------------------
# hyperparams.yaml
# --------------------------------------------------------------------------------------------------------------------

_REF = re.compile(r"<([^<>]+)>")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow, ast.USub: operator.neg}


def _arith(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _arith(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_arith(node.left), _arith(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_arith(node.operand))
    raise ValueError("not arithmetic")


class _Ref:
    def __init__(self, text: str) -> None:
        self.text = text


def _loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def tagged(loader: Any, suffix: str, node: Any) -> Any:
        tag = "!" + suffix
        if tag == "!ref":
            return _Ref(loader.construct_scalar(node))
        if isinstance(node, yaml.MappingNode):
            return {"__tag__": tag, **loader.construct_mapping(node, deep=True)}
        if isinstance(node, yaml.SequenceNode):
            return {"__tag__": tag, "__args__": loader.construct_sequence(node, deep=True)}
        return {"__tag__": tag, "__value__": loader.construct_scalar(node)}

    Loader.add_multi_constructor("!", tagged)
    return Loader


def read_hyperparams(path: Path) -> dict[str, Any]:
    """A SpeechBrain ``hyperparams.yaml`` as data; ``!ref <key>`` (and ``<a>/<b>``, ``<n> * 2``) resolved against
    the file's top-level keys. ParameterError for a missing or malformed file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"{path}: no such file (a SpeechBrain model folder holds hyperparams.yaml)")
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_loader())  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ParameterError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise ParameterError(f"{path}: expected a mapping of hyperparameters, got {type(doc).__name__}")

    def resolve(value: Any, depth: int = 0) -> Any:
        if depth > 20:
            raise ParameterError(f"{path}: !ref references nest too deeply (a cycle?)")
        if isinstance(value, _Ref):
            text = value.text.strip()
            whole = _REF.fullmatch(text)
            if whole:
                key = whole.group(1).split(".")[0]
                if key not in doc:
                    raise ParameterError(f"{path}: !ref {text} names no top-level key")
                return resolve(doc[key], depth + 1)

            def sub(m: re.Match) -> str:
                key = m.group(1)
                if key not in doc:
                    raise ParameterError(f"{path}: !ref {text} names no top-level key {key!r}")
                return str(resolve(doc[key], depth + 1))

            text = _REF.sub(sub, text)
            try:
                return _arith(ast.parse(text, mode="eval"))
            except (ValueError, SyntaxError):
                return text
        if isinstance(value, dict):
            return {k: resolve(v, depth) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, depth) for v in value]
        return value

    return {k: resolve(v) for k, v in doc.items()}
