"""Any ONNX speaker-embedding model through onnxruntime: ``onnx:path=FILE.onnx``; cosine scoring; CSI-E/SV/OSI.

The graph takes either waveforms — input (B, T) or (B, 1, T) float in [-1, 1] at 16 kHz — or features
(B, frames, n_mels), and returns (B, D) embeddings (or (B, 1, D)). What it takes is read from its first input
(rank, static sizes, name: ``wav``/``audio``/``speech``/``signal`` mean waves) unless ``frontend=`` says so.
Feature graphs get the front-end of the toolkit that exported them, in torch before the graph:

=============  ==================================================================================================
frontend       features
=============  ==================================================================================================
``wespeaker``  Kaldi log fbank of the wave ×32768, Hamming window, dither 0, snip edges; mean over frames
               removed (WeSpeaker's ``compute_fbank`` + CMN; the default for feature graphs)
``3dspeaker``  Kaldi log fbank of the [-1, 1] wave, povey window, dither 0, snip edges; mean removed
               (3D-Speaker's ``FBank(mean_nor=True)``)
``speechbrain``  SpeechBrain Fbank (n_fft 400, f_max 8 kHz, dB with top_db 80); sentence mean removed
``wave``       none: the graph gets the waveform
=============  ==================================================================================================

Levels: a feature graph has ``wave`` -> ``raw`` (the fbank) -> ``final`` (mean-normalised, the graph's input); a
waveform graph has ``wave`` -> ``final`` = the waveform as (B, T, 1) frames of one sample. ``levels`` is therefore
set per instance.

**Not differentiable.** onnxruntime gives no gradient, so the backbone declares ``differentiable = False``: the
scores it returns carry an autograd node whose backward raises :class:`~sec4sr_core.sdk.KnowledgeError` naming the
score- and decision-based attacks that can be used instead. Score-based (``fakebob``, ``pgd-nes``, ``square`` ...)
and decision-based (``hsja``, ``kenan`` ...) attacks only query scores or decisions and work unchanged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from sec4sr_core.sdk import KnowledgeError, ParameterError
from sec4sr_core.sdk import Params, SpeakerModel, Task

_WAVE_HINTS = ("wav", "audio", "speech", "signal", "pcm", "sample")

NOT_DIFFERENTIABLE = (
    "model 'onnx' runs an onnxruntime graph and has no gradient: white-box attacks cannot run against it; use a "
    "score-based attack (fakebob, pgd-nes, square, ...) or a decision-based one (hsja, kenan, ...)"
)


class _NoGradient(torch.autograd.Function):
    """Forward: the onnxruntime result; backward: KnowledgeError (the graph has no gradient)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, run: Any) -> torch.Tensor:  # noqa: D102
        return run(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:  # noqa: D102
        raise KnowledgeError(NOT_DIFFERENTIABLE)


class OnnxParams(Params):
    path: Path = Field(..., description="an ONNX speaker-embedding model: input (B, T) waves or (B, frames, n_mels) "
                                        "features, output (B, D) embeddings")
    frontend: Literal["auto", "wave", "wespeaker", "3dspeaker", "speechbrain"] = Field(
        "auto", description="what feeds the graph (auto: waves for a waveform input, else wespeaker fbank + CMN)")
    n_mels: int | None = Field(None, ge=8, description="fbank bands of a feature graph (default: the graph's static "
                                                       "last input dimension)")
    cmn: bool = Field(True, description="remove each utterance's feature mean over frames (feature front-ends)")
    provider: Literal["cpu", "cuda"] = Field("cpu", description="onnxruntime execution provider")
    threads: int = Field(1, ge=0, description="onnxruntime intra-op threads (0: onnxruntime's choice)")


def _static(d: Any) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


class OnnxModel(SpeakerModel):
    """Any ONNX speaker-embedding model through onnxruntime (score/decision attacks only); CSI-E/SV/OSI."""

    name = "onnx"
    Params = OnnxParams
    #: a feature graph's levels; a waveform graph sets ``stages``/``levels`` to wave -> final on the instance
    stages = (("raw", "compute_features"), ("final", "normalize"))
    output = "embedding"
    tasks = (Task.CSI_E, Task.SV, Task.OSI)
    #: onnxruntime gives no gradient: white-box attacks are refused (see module docstring)
    differentiable: ClassVar[bool] = False

    def __init__(self, params=None, **kwargs) -> None:
        super().__init__(params, **kwargs)
        p = self.params
        path = Path(p.path)
        if not path.is_file():
            raise ParameterError(f"onnx: path={path} is not a file (an .onnx model)")
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - the extra is a dependency of the models distribution
            raise ParameterError("onnx models need onnxruntime: pip install onnxruntime") from None
        opts = ort.SessionOptions()
        if p.threads:
            opts.intra_op_num_threads = p.threads
            opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if p.provider == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ParameterError("onnx: provider=cuda, but this onnxruntime has no CUDAExecutionProvider "
                                     "(install onnxruntime-gpu)")
            providers.insert(0, "CUDAExecutionProvider")
        data = path.read_bytes()
        self._session_args = (data, opts, providers)
        try:
            self.session = ort.InferenceSession(data, sess_options=opts, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ParameterError(f"onnx: cannot load {path}: {str(exc).splitlines()[0]}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ParameterError(f"onnx: {path} has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); a "
                                 f"speaker-embedding graph takes one (waves or features)")
        self.input_name, kind = inputs[0].name, inputs[0].type
        self.output_name = outputs[0].name
        if kind not in ("tensor(float)", "tensor(double)"):
            raise ParameterError(f"onnx: input {self.input_name!r} is {kind}; float input expected")
        self.input_dtype = np.float64 if kind == "tensor(double)" else np.float32
        shape = list(inputs[0].shape)
        self.fixed_batch = _static(shape[0]) if shape else None
        self.kind = self._detect(shape, path)
        self.register_buffer("graph_sha256", torch.tensor(list(hashlib.sha256(data).digest()), dtype=torch.uint8))
        if self.kind == "wave":
            self.stages = (("final", "as_frames"),)
            self.levels = ("wave", "final")
            self.wave_rank = len(shape)
            return
        n_mels = p.n_mels or _static(shape[2])
        if n_mels is None:
            raise ParameterError(f"onnx: input {self.input_name!r} {shape} has no static feature size; give n_mels=")
        if _static(shape[2]) not in (None, n_mels):
            raise ParameterError(f"onnx: n_mels={n_mels}, but the graph's input takes {shape[2]} features")
        self.n_mels = n_mels
        self.frontend_name = self.kind
        if self.kind == "speechbrain":
            from .speechbrain_fbank import SpeechBrainFbank

            self.features = SpeechBrainFbank(n_mels=n_mels)
        else:
            from .frontends import KaldiFbank

            wespeaker = self.kind == "wespeaker"
            self.features = KaldiFbank(num_mel_bins=n_mels, scale=32768.0 if wespeaker else 1.0, snip_edges=True)
            if wespeaker:  # window_type='hamming' in WeSpeaker's compute_fbank
                self.features.window = torch.hamming_window(self.features.size, periodic=False)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (copies, worker processes): the session is rebuilt from the graph's bytes."""
        state = self.__dict__.copy()
        state.pop("session", None)
        data, _, providers = state.pop("_session_args")
        state["_graph"] = (data, providers)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        import onnxruntime as ort

        data, providers = state.pop("_graph")
        self.__dict__.update(state)
        opts = ort.SessionOptions()
        if self.params.threads:
            opts.intra_op_num_threads = self.params.threads
            opts.inter_op_num_threads = 1
        self._session_args = (data, opts, providers)
        self.session = ort.InferenceSession(data, sess_options=opts, providers=providers)

    def _detect(self, shape: list[Any], path: Path) -> str:
        """The front-end: ``wave`` or a feature front-end name (``frontend=`` checked against the graph)."""
        rank, name = len(shape), self.input_name.lower()
        if rank == 2 or (rank == 3 and shape[1] == 1):
            graph = "wave"
        elif rank == 3 and _static(shape[2]) is None and any(h in name for h in _WAVE_HINTS):
            graph = "wave"
        elif rank == 3:
            graph = "features"
        else:
            raise ParameterError(f"onnx: {path} input {self.input_name!r} has shape {shape}; expected (B, T) waves or "
                                 f"(B, frames, n_mels) features")
        want = self.params.frontend
        if want == "auto":
            return "wave" if graph == "wave" else "wespeaker"
        if (want == "wave") != (graph == "wave"):
            raise ParameterError(f"onnx: frontend={want}, but input {self.input_name!r} {shape} takes "
                                 f"{'waveforms' if graph == 'wave' else 'features'}")
        return want

    # -- weights: the graph holds them --------------------------------------------------------------------------------
    def load_weights(self, home: Path) -> None:
        """Nothing to load: the weights are in the graph (read when the model is built)."""

    # -- levels -------------------------------------------------------------------------------------------------------
    def as_frames(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) waveform -> (B, T, 1): a waveform graph's ``final`` level."""
        return wave.reshape(wave.shape[0], -1, 1)

    def compute_features(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) waveform -> (B, frames, n_mels) fbank of the chosen front-end."""
        return self.features(wave)

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Per-utterance mean over frames removed (``cmn``), else unchanged."""
        return raw - raw.mean(dim=1, keepdim=True) if self.params.cmn else raw

    # -- network ------------------------------------------------------------------------------------------------------
    def _run(self, final: torch.Tensor) -> torch.Tensor:
        """onnxruntime on ``final`` features (B, frames, dims) -> (B, D) float32 on ``final``'s device."""
        x = final.detach()
        if self.kind == "wave":
            x = x.reshape(x.shape[0], -1)
            if self.wave_rank == 3:
                x = x.unsqueeze(1)
        arr = np.ascontiguousarray(x.cpu().numpy().astype(self.input_dtype, copy=False))
        if self.fixed_batch == 1 and arr.shape[0] != 1:
            outs = [self.session.run([self.output_name], {self.input_name: arr[i : i + 1]})[0]
                    for i in range(arr.shape[0])]
            out = np.concatenate(outs, axis=0)
        else:
            out = self.session.run([self.output_name], {self.input_name: arr})[0]
        out = np.asarray(out)
        if out.ndim == 3 and out.shape[1] == 1:
            out = out[:, 0]
        if out.ndim != 2 or out.shape[0] != arr.shape[0]:
            raise ParameterError(f"onnx: output {self.output_name!r} is {out.shape} for a batch of {arr.shape[0]}; "
                                 f"(B, D) embeddings expected")
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(final.device)

    def head(self, final: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, D) of the graph's input level. Under autograd the result's backward raises
        KnowledgeError (no gradient through onnxruntime)."""
        if torch.is_grad_enabled() and final.requires_grad:
            return _NoGradient.apply(final, self._run)
        return self._run(final)

    def enroll_embeddings(self, embs: torch.Tensor) -> torch.Tensor:
        return F.normalize(embs, dim=-1).mean(dim=0)
