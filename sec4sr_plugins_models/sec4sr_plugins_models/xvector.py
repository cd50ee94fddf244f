"""x-vector / PLDA (Kaldi VoxCeleb v2 style, the predecessor's ``xv_plda``), batched and differentiable.

Levels: ``wave`` -> ``raw`` (Kaldi MFCC 30, (B, T, 30)) -> ``cmvn`` (sliding CMN, window 300) -> ``final``
(= ``cmvn``, the frames entering the TDNN).

Network (parameter names as the predecessor's ``xvecTDNN`` state_dict, so its checkpoint loads): each frame layer is
Conv1d -> ReLU -> BatchNorm1d(affine=False): tdnn1 30→512 k5 d1, tdnn2 512→512 k5 d2, tdnn3 512→512 k7 d3,
tdnn4 512→512 k1, tdnn5 512→1500 k1; statistics pooling (mean, unbiased std) 3000; fc1 3000→512 = **the x-vector**
(pre-activation). Training head: ReLU→BN→fc2 512→512→ReLU→BN→fc3 512→speakers. Receptive field 15 frames each
side: inputs need at least 31 frames (0.31 s). In training mode 1e-5·N(0, 1) noise is added before pooling (on the
input's device; the predecessor allocated it on CUDA only).

Back-end: :class:`~.backend.PLDABackend` (mean, LDA, length norm with gradient, PLDA), fitted on the training
x-vectors when ``sec4sr train --model xvector`` finishes, or loaded from Kaldi text files (``plda_dir``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from sec4sr_core.sdk import Sec4srError
from sec4sr_core.sdk import SpeakerModel, Task
from sec4sr_core.sdk import Params
from sec4sr_core.sdk import load_state, read_torch_file

from . import kaldi_io
from .backend import PLDABackend
from .frontends import KaldiMFCC, sliding_cmn
from .trainable import Trainable

LAYERS = ((5, 1), (5, 2), (7, 3), (1, 1), (1, 1))  # (kernel, dilation) of tdnn1..tdnn5


class XvectorParams(Params):
    checkpoint: Path | None = Field(None, description="the predecessor's xvecTDNN state_dict (.ckpt); needs plda_dir")
    plda_dir: Path | None = Field(None, description="folder with Kaldi text plda.txt, mean.vec, transform.txt")
    channels: int = Field(512, ge=8, description="channels of tdnn1-tdnn4 (512 in the predecessor)")
    pool_channels: int = Field(1500, ge=8, description="channels of tdnn5 before statistics pooling (1500)")
    embed_dim: int = Field(512, ge=8, description="x-vector dimension (fc1 output)")
    lda_dim: int = Field(20, ge=1, description="LDA output dimension (< number of training speakers)")
    lda_shrinkage: float = Field(0.1, ge=0, description="within-class covariance shrinkage when fitting LDA, as a "
                                 "fraction of its mean variance (needed when training x-vectors are fewer than "
                                 "embed_dim, as on the embedded corpus)")
    num_ceps: int = Field(30, ge=2, le=30, description="MFCC cepstra (30 mel bins, 20-7600 Hz)")
    cmn_window: int = Field(300, ge=1, description="sliding CMN window in frames (10 ms each)")
    dither: float = Field(0.0, ge=0, description="Kaldi dither in int16 units (0 = deterministic)")


class XVector(Trainable, SpeakerModel):
    """x-vector/PLDA: Kaldi MFCC 30, sliding CMN, TDNN 512/1500 with statistics pooling; CSI-E/SV/OSI."""

    name = "xvector"
    Params = XvectorParams
    #: wave (B, 1, T) -> raw MFCC (B, frames, num_ceps) -> cmvn (sliding CMN) -> final
    stages = (("raw", "compute_mfcc"), ("cmvn", "normalize_mean"), ("final", None))
    output = "embedding"
    tasks = (Task.CSI_E, Task.SV, Task.OSI)
    train_defaults = {"epochs": 4, "lr": 1e-3, "batch_size": 16, "crop_s": 1.5}

    def __init__(self, params=None, **kwargs) -> None:
        super().__init__(params, **kwargs)
        p = self.params
        self.mfcc = KaldiMFCC(num_ceps=p.num_ceps, num_mel_bins=30, low_freq=20.0, high_freq=7600.0,
                              snip_edges=False, dither=p.dither)
        dims = [p.num_ceps, p.channels, p.channels, p.channels, p.channels, p.pool_channels]
        for i, (k, d) in enumerate(LAYERS, start=1):
            setattr(self, f"tdnn{i}", nn.Conv1d(dims[i - 1], dims[i], kernel_size=k, dilation=d))
            setattr(self, f"bn_tdnn{i}", nn.BatchNorm1d(dims[i], momentum=0.1, affine=False))
        self.fc1 = nn.Linear(2 * p.pool_channels, p.embed_dim)
        self.bn_fc1 = nn.BatchNorm1d(p.embed_dim, momentum=0.1, affine=False)
        self.fc2 = nn.Linear(p.embed_dim, p.embed_dim)
        self.bn_fc2 = nn.BatchNorm1d(p.embed_dim, momentum=0.1, affine=False)
        self.fc3 = nn.Linear(p.embed_dim, 1)
        self.backend = PLDABackend(p.embed_dim, min(p.lda_dim, p.embed_dim))
        self.generator: torch.Generator | None = None

    # -- weights ----------------------------------------------------------------------------------------------------
    def build_classifier(self, n: int) -> None:
        if self.fc3.out_features != n:
            self.fc3 = nn.Linear(self.params.embed_dim, n).to(self.fc2.weight.device)

    def load_weights(self, home: Path, tag: str = "") -> None:
        if self.params.checkpoint is None:
            return super().load_weights(home, tag)
        if self.params.plda_dir is None:
            raise Sec4srError("xvector: checkpoint= needs plda_dir= (plda.txt, mean.vec, transform.txt)")
        self.load_predecessor(self.params.checkpoint, self.params.plda_dir)

    def load_predecessor(self, checkpoint: Path | str, plda_dir: Path | str) -> None:
        """Load the predecessor's TDNN state_dict and its Kaldi PLDA back-end files."""
        payload = read_torch_file(Path(checkpoint))
        state = payload
        if isinstance(payload, dict):
            for key in ("model_state_dict", "state_dict"):
                if isinstance(payload.get(key), dict):
                    state = payload[key]
        if not isinstance(state, dict) or "fc3.bias" not in state:
            raise Sec4srError(f"{checkpoint}: not an xvecTDNN state_dict (no fc3.bias)")
        self.build_classifier(int(state["fc3.bias"].shape[0]))
        own = {k for k in self.state_dict() if not k.startswith("backend.")}
        state = {k: v for k, v in state.items() if k in own}  # the predecessor filtered unknown keys too
        full = {**{k: v for k, v in self.state_dict().items() if k.startswith("backend.")}, **state}
        load_state(self, full, str(checkpoint))
        folder = Path(plda_dir)
        plda = kaldi_io.read_plda(folder / "plda.txt")
        self.backend.load_kaldi(kaldi_io.read_vector(folder / "mean.vec"), kaldi_io.read_matrix(folder / "transform.txt"),
                                plda.mean, plda.transform, plda.psi)

    # -- levels ------------------------------------------------------------------------------------------------------
    def compute_mfcc(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) waveform -> (B, frames, num_ceps) Kaldi MFCCs (dither from ``self.generator`` if enabled)."""
        return self.mfcc(wave, self.generator)

    def normalize_mean(self, raw: torch.Tensor) -> torch.Tensor:
        """Sliding cepstral mean normalisation over ``cmn_window`` frames (shape kept)."""
        return sliding_cmn(raw, self.params.cmn_window)

    # -- network -----------------------------------------------------------------------------------------------------
    def xvector(self, final: torch.Tensor) -> torch.Tensor:
        """x-vectors (B, embed_dim) of (B, T, num_ceps) frames (T ≥ 31)."""
        if final.shape[1] < 31:
            raise Sec4srError(f"xvector needs at least 31 frames (0.31 s of audio), got {final.shape[1]}")
        x = final.transpose(1, 2)
        for i in range(1, 6):
            x = getattr(self, f"bn_tdnn{i}")(F.relu(getattr(self, f"tdnn{i}")(x)))
        if self.training:
            x = x + 1e-5 * torch.randn_like(x)
        stats = torch.cat([x.mean(dim=2), x.std(dim=2)], dim=1)
        return self.fc1(stats)

    def head(self, final: torch.Tensor) -> torch.Tensor:
        """PLDA-space embeddings (B, lda_dim)."""
        return self.backend(self.xvector(final))

    def score(self, emb: torch.Tensor, enrolled: torch.Tensor) -> torch.Tensor:
        return self.backend.score(emb, enrolled.to(emb.dtype))

    def train_logits(self, final: torch.Tensor) -> torch.Tensor:
        x = self.bn_fc1(F.relu(self.xvector(final)))
        x = self.bn_fc2(F.relu(self.fc2(x)))
        return self.fc3(x)

    @torch.no_grad()
    def after_training(self, dataset: Any, config: Any) -> dict[str, Any]:
        """Fit the LDA/PLDA back-end on the x-vectors of the training split (model in eval mode)."""
        from sec4sr_core.sdk import load_batch

        was = self.training
        self.eval()
        utts = dataset.split("train")
        index = {s: i for i, s in enumerate(self.class_ids)}
        length = int(round(getattr(config, "embed_s", 3.0) * 16000))
        vecs = []
        for s in range(0, len(utts), 32):
            x = load_batch([u.path for u in utts[s : s + 32]], length).to(self.fc1.weight.device)
            vecs.append(self.xvector(self.to_level(x, "wave", "final")).cpu())
        self.backend.fit(torch.cat(vecs), torch.tensor([index[u.speaker] for u in utts]), self.params.lda_shrinkage)
        self.train(was)
        return {"backend_utterances": len(utts)}
