"""ECAPA-TDNN (Desplanques et al., 2020) on 80-d Kaldi fbank, trained with AAM-softmax; cosine scoring.

Levels: ``wave`` -> ``raw`` (Kaldi log fbank 80, (B, T, 80)) -> ``final`` (per-utterance mean removed, as
SpeechBrain's sentence-level input normalisation).

The module tree and parameter names follow SpeechBrain's ``ECAPA_TDNN`` (``blocks.0.conv.conv.weight``,
``blocks.1.res2net_block.blocks.0.norm.norm.running_mean``, ``asp.tdnn...``, ``asp_bn.norm...``, ``fc.conv...``) and
its convolutions pad "same" by reflection, so a SpeechBrain ``embedding_model.ckpt`` with the same sizes loads from a
local path (``checkpoint=``; ``channels=1024`` for ``spkrec-ecapa-voxceleb``). Note that SpeechBrain computes its
own (non-Kaldi) fbank; pretrained weights therefore see slightly different features here.

Channels ``[C, C, C, C, 3C]``, kernels ``[5, 3, 3, 3, 1]``, dilations ``[1, 2, 3, 4, 1]``, Res2Net scale 8,
SE and attention bottlenecks 128, attentive statistics pooling with global context, ``lin_neurons``-d embedding.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from sec4sr_core.sdk import Sec4srError
from sec4sr_core.sdk import SpeakerModel, Task
from sec4sr_core.sdk import Params
from sec4sr_core.sdk import load_state, read_torch_file

from .frontends import KaldiFbank
from .trainable import Trainable


class SameConv1d(nn.Module):
    """Conv1d with SpeechBrain's "same" reflect padding; the inner module is ``.conv`` (checkpoint names)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, dilation: int = 1) -> None:
        super().__init__()
        self.pad = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(cin, cout, kernel_size, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            x = F.pad(x, (self.pad, self.pad), mode="reflect")
        return self.conv(x)


class BN(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class TDNNBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.conv = SameConv1d(cin, cout, kernel_size, dilation)
        self.activation = nn.ReLU()
        self.norm = BN(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.activation(self.conv(x)))


class Res2NetBlock(nn.Module):
    def __init__(self, channels: int, scale: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.scale = scale
        w = channels // scale
        self.blocks = nn.ModuleList([TDNNBlock(w, w, kernel_size, dilation) for _ in range(scale - 1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.chunk(x, self.scale, dim=1)
        out = [parts[0]]
        y = None
        for i in range(1, self.scale):
            y = self.blocks[i - 1](parts[i] if i == 1 else parts[i] + y)
            out.append(y)
        return torch.cat(out, dim=1)


class SEBlock(nn.Module):
    def __init__(self, channels: int, se_channels: int) -> None:
        super().__init__()
        self.conv1 = SameConv1d(channels, se_channels, 1)
        self.conv2 = SameConv1d(se_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=2, keepdim=True)
        return x * torch.sigmoid(self.conv2(F.relu(self.conv1(s))))


class SERes2NetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, scale: int, se_channels: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.tdnn1 = TDNNBlock(cin, cout, 1, 1)
        self.res2net_block = Res2NetBlock(cout, scale, kernel_size, dilation)
        self.tdnn2 = TDNNBlock(cout, cout, 1, 1)
        self.se_block = SEBlock(cout, se_channels)
        self.shortcut = SameConv1d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(x) if self.shortcut is not None else x
        return self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x)))) + residual


class AttentiveStatisticsPooling(nn.Module):
    def __init__(self, channels: int, attention_channels: int) -> None:
        super().__init__()
        self.tdnn = TDNNBlock(3 * channels, attention_channels, 1, 1)
        self.conv = SameConv1d(attention_channels, channels, 1)

    @staticmethod
    def _stats(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = (w * x).sum(dim=2)
        std = torch.sqrt((w * (x - mean.unsqueeze(2)).pow(2)).sum(dim=2).clamp_min(1e-12))
        return mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[2]
        mean, std = self._stats(x, torch.full_like(x[:, :1], 1.0 / t))
        ctx = torch.cat([x, mean.unsqueeze(2).expand(-1, -1, t), std.unsqueeze(2).expand(-1, -1, t)], dim=1)
        attn = torch.softmax(self.conv(torch.tanh(self.tdnn(ctx))), dim=2)
        mean, std = self._stats(x, attn)
        return torch.cat([mean, std], dim=1).unsqueeze(2)


class EcapaParams(Params):
    checkpoint: Path | None = Field(None, description="a local SpeechBrain embedding_model.ckpt with the same sizes")
    channels: int = Field(128, ge=8, description="channels C of the frame layers (C,C,C,C,3C); 512-1024 in the paper, 1024 in SpeechBrain's "
                                               "VoxCeleb model; must be divisible by res2net_scale")
    lin_neurons: int = Field(192, ge=2, description="embedding dimension")
    attention_channels: int = Field(128, ge=1, description="attention bottleneck of the pooling")
    se_channels: int = Field(128, ge=1, description="squeeze-excitation bottleneck")
    res2net_scale: int = Field(8, ge=2, description="Res2Net scale")
    n_mels: int = Field(80, ge=8, description="Kaldi log fbank bands")
    margin: float = Field(0.2, ge=0, description="AAM-softmax additive angular margin (radians) in training")
    scale: float = Field(30.0, gt=0, description="AAM-softmax scale; training logits are scale·cos")
    dither: float = Field(0.0, ge=0, description="Kaldi dither in int16 units (0 = deterministic)")
    noise_floor: float = Field(1.0, ge=0, description="deterministic dither: the expected fbank energy of white noise "
                               "of this std (int16 units) is added before the log, so zero padding looks like quiet "
                               "room noise, not log(eps) (0 = Kaldi's eps floor)")


class ECAPA(Trainable, SpeakerModel):
    """ECAPA-TDNN on 80-d Kaldi fbank, AAM-softmax training, cosine scoring; CSI-E/SV/OSI."""

    name = "ecapa"
    Params = EcapaParams
    #: wave (B, 1, T) -> raw 80-d Kaldi fbank (B, frames, n_mels) -> final (utterance mean removed)
    stages = (("raw", "compute_fbank"), ("final", "normalize_mean"))
    output = "embedding"
    tasks = (Task.CSI_E, Task.SV, Task.OSI)
    train_defaults = {"epochs": 4, "lr": 2e-3, "batch_size": 16, "crop_s": 2.0, "min_crop_s": 1.3}

    def __init__(self, params=None, **kwargs) -> None:
        super().__init__(params, **kwargs)
        p = self.params
        if p.channels % p.res2net_scale:
            raise Sec4srError(f"ecapa: channels ({p.channels}) must be divisible by res2net_scale ({p.res2net_scale})")
        c = p.channels
        chans, kernels, dils = [c, c, c, c, 3 * c], [5, 3, 3, 3, 1], [1, 2, 3, 4, 1]
        self.fbank = KaldiFbank(num_mel_bins=p.n_mels, snip_edges=False, dither=p.dither, noise_floor=p.noise_floor)
        self.blocks = nn.ModuleList([TDNNBlock(p.n_mels, chans[0], kernels[0], dils[0])])
        for i in range(1, 4):
            self.blocks.append(SERes2NetBlock(chans[i - 1], chans[i], p.res2net_scale, p.se_channels, kernels[i], dils[i]))
        self.mfa = TDNNBlock(3 * c, chans[4], kernels[4], dils[4])
        self.asp = AttentiveStatisticsPooling(chans[4], p.attention_channels)
        self.asp_bn = BN(2 * chans[4])
        self.fc = SameConv1d(2 * chans[4], p.lin_neurons, 1)
        self.classifier = nn.Parameter(torch.zeros(1, p.lin_neurons))
        self.generator: torch.Generator | None = None

    # -- weights ----------------------------------------------------------------------------------------------------
    def build_classifier(self, n: int) -> None:
        if self.classifier.shape[0] != n:
            w = torch.empty(n, self.params.lin_neurons, device=self.fc.conv.weight.device)
            nn.init.xavier_uniform_(w)
            self.classifier = nn.Parameter(w)

    def load_weights(self, home: Path, tag: str = "") -> None:
        if self.params.checkpoint is None:
            return super().load_weights(home, tag)
        self.load_speechbrain(self.params.checkpoint)

    def load_speechbrain(self, path: Path | str) -> None:
        """Load a SpeechBrain ``embedding_model.ckpt`` (the ECAPA_TDNN state_dict); errors name mismatching keys."""
        state = read_torch_file(Path(path))
        if not isinstance(state, dict) or not any(k.startswith("blocks.0.") for k in state):
            raise Sec4srError(f"{path}: not a SpeechBrain ECAPA_TDNN state_dict (no blocks.0.* keys)")
        state = {k: v for k, v in state.items()}
        state["classifier"] = self.classifier.detach()
        load_state(self, state, str(path))

    # -- levels ------------------------------------------------------------------------------------------------------
    def compute_fbank(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) waveform -> (B, frames, n_mels) log Kaldi fbank (dither from ``self.generator`` if enabled)."""
        return self.fbank(wave, self.generator)

    def normalize_mean(self, raw: torch.Tensor) -> torch.Tensor:
        """Remove each utterance's mean over frames (B, frames, n_mels) -> same shape."""
        return raw - raw.mean(dim=1, keepdim=True)

    # -- network -----------------------------------------------------------------------------------------------------
    def head(self, final: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, lin_neurons) of (B, T, n_mels) normalised fbank frames."""
        x = final.transpose(1, 2)
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        x = self.mfa(torch.cat(outs[1:], dim=1))
        x = self.asp_bn(self.asp(x))
        return self.fc(x).squeeze(2)

    def enroll_embeddings(self, embs: torch.Tensor) -> torch.Tensor:
        return F.normalize(embs, dim=-1).mean(dim=0)

    def train_logits(self, final: torch.Tensor) -> torch.Tensor:
        """scale·cos(θ) against the class weights (no margin: what an attacker on a CSI view sees)."""
        emb = F.normalize(self.head(final), dim=-1)
        return self.params.scale * emb @ F.normalize(self.classifier, dim=-1).T

    def train_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """AAM-softmax: the target logit becomes scale·cos(θ + m)."""
        s, m = self.params.scale, self.params.margin
        cos = (logits / s).clamp(-1 + 1e-7, 1 - 1e-7)
        target = cos.gather(1, y.view(-1, 1))
        sin = torch.sqrt(1.0 - target.pow(2))
        phi = target * math.cos(m) - sin * math.sin(m)
        # keep the margin monotonic past θ + m > π (as the usual "easy margin" fallback)
        phi = torch.where(target > math.cos(math.pi - m), phi, target - math.sin(math.pi - m) * m)
        return F.cross_entropy(s * cos.scatter(1, y.view(-1, 1), phi), y)
