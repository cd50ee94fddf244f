"""3D-Speaker ERes2Net (Chen et al., 2023) in its published format: a ``.bin``/``.ckpt``/``.pt`` state dict of
``speakerlab.models.eres2net.ERes2Net.ERes2Net``, loaded by key name, strictly.

Architecture as the upstream code: a ResNet34-shaped 2-D CNN (``num_blocks`` [3, 4, 6, 3], ``m_channels`` 32)
whose Res2Net basic blocks (width ``floor(planes · baseWidth/64)``, scale 2, expansion 2) fuse their scales by
addition in ``layer1``/``layer2`` (``BasicBlockERes2Net``) and by attentional feature fusion in ``layer3``/``layer4``
(``BasicBlockERes2Net_diff_AFF``: ``AFF`` = 1×1 conv → BN → SiLU → 1×1 conv → BN on the concatenation, weights
``1 + tanh``); a bottom-up global fusion of the four stages (``layerN_downsample`` stride-2 3×3 convs and
``fuse_mode12/123/1234`` AFF blocks); temporal statistics pooling (TSTP: mean and sqrt(var + 1e-8), unbiased
variance); a linear embedding layer ``seg_1`` (``two_emb_layer``: ReLU, affine-free BN ``seg_bn_1``, ``seg_2``).
The block activation is 3D-Speaker's ``ReLU`` = Hardtanh(0, 20); the stem uses a plain ReLU.

Front-end as 3D-Speaker's ``FBank(80, 16000, mean_nor=True)``: ``torchaudio.compliance.kaldi.fbank`` on the [-1, 1]
waveform (no int16 scaling, dither 0, snip edges, povey window, 20 Hz - Nyquist), then each utterance's mean over
frames removed. Levels: ``wave`` -> ``raw`` (log fbank (B, frames, 80)) -> ``final`` (mean removed).

Sizes are read from the checkpoint (``m_channels`` from ``conv1.weight``, ``embedding_size`` from ``seg_1.weight``,
``num_blocks`` from the ``layerN.M`` keys, ``two_emb_layer`` from ``seg_2``), so the published VoxCeleb model
(m_channels 32, 192-d: 6.61 M parameters, as upstream prints), the base models (m_channels 32, 512-d: 9.89 M) and the
large one (m_channels 64, 512-d) load without options.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from sec4sr_core.sdk import ParameterError, Sec4srError
from sec4sr_core.sdk import Params, SpeakerModel, Task
from sec4sr_core.sdk import load_state, read_torch_file

from .frontends import KaldiFbank


def hardtanh20(x: torch.Tensor) -> torch.Tensor:
    """3D-Speaker's ``ReLU`` (``nn.Hardtanh(0, 20)``)."""
    return F.hardtanh(x, 0.0, 20.0)


class AFF(nn.Module):
    """Attentional feature fusion: ``x·(1 + tanh a) + y·(1 - tanh a)`` with ``a = local_att([x, y])``."""

    def __init__(self, channels: int, r: int = 4) -> None:
        super().__init__()
        inter = int(channels // r)
        self.local_att = nn.Sequential(
            nn.Conv2d(channels * 2, inter, kernel_size=1), nn.BatchNorm2d(inter), nn.SiLU(),
            nn.Conv2d(inter, channels, kernel_size=1), nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor, ds_y: torch.Tensor) -> torch.Tensor:
        att = 1.0 + torch.tanh(self.local_att(torch.cat((x, ds_y), dim=1)))
        return x * att + ds_y * (2.0 - att)


class BasicBlockERes2Net(nn.Module):
    """Res2Net basic block; ``fuse=True`` is ``BasicBlockERes2Net_diff_AFF`` (AFF instead of addition)."""

    expansion = 2

    def __init__(self, in_planes: int, planes: int, stride: int = 1, base_width: int = 32, scale: int = 2,
                 fuse: bool = False) -> None:
        super().__init__()
        width = int(math.floor(planes * (base_width / 64.0)))
        self.conv1 = nn.Conv2d(in_planes, width * scale, kernel_size=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(width * scale)
        self.nums = scale
        self.convs = nn.ModuleList([nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False)
                                    for _ in range(scale)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(width) for _ in range(scale)])
        self.fuse = fuse
        if fuse:
            self.fuse_models = nn.ModuleList([AFF(channels=width) for _ in range(scale - 1)])
        self.conv3 = nn.Conv2d(width * scale, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(self.expansion * planes))
        self.width = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = hardtanh20(self.bn1(self.conv1(x)))
        spx = torch.split(out, self.width, 1)
        parts = []
        sp = spx[0]
        for i in range(self.nums):
            if i > 0:
                sp = self.fuse_models[i - 1](sp, spx[i]) if self.fuse else sp + spx[i]
            sp = hardtanh20(self.bns[i](self.convs[i](sp)))
            parts.append(sp)
        out = self.bn3(self.conv3(torch.cat(parts, dim=1)))
        return hardtanh20(out + self.shortcut(x))


def _pool(x: torch.Tensor, kind: str) -> torch.Tensor:
    """3D-Speaker's TAP / TSDP / TSTP over the last (time) axis of (B, C, F, T), flattened to (B, stats)."""
    mean = x.mean(dim=-1).flatten(start_dim=1)
    if kind == "TAP":
        return mean
    std = torch.sqrt(torch.var(x, dim=-1) + 1e-8).flatten(start_dim=1)
    return std if kind == "TSDP" else torch.cat((mean, std), dim=1)


class ERes2NetParams(Params):
    path: Path | None = Field(None, description="a 3D-Speaker ERes2Net state dict (.bin/.ckpt/.pt); sizes are read "
                                                "from it (none: random weights of the sizes below)")
    m_channels: int = Field(32, ge=4, description="stem channels (32 base/VoxCeleb, 64 large); from the checkpoint "
                                                  "when path is set")
    embedding_size: int = Field(192, ge=2, description="embedding dimension (192: the upstream default and the "
                                                       "VoxCeleb model; 512: the 3D-Speaker/200k base and large "
                                                       "models); from the checkpoint when path is set")
    feat_dim: int = Field(80, ge=8, description="log mel fbank bands (multiple of 8)")
    base_width: int = Field(32, ge=1, description="Res2Net baseWidth (block width = planes·baseWidth/64)")
    scale: int = Field(2, ge=2, description="Res2Net scale")
    pooling: Literal["TSTP", "TAP", "TSDP"] = Field("TSTP", description="temporal pooling (TSTP: mean and std)")
    two_emb_layer: bool = Field(False, description="a second embedding layer (seg_bn_1, seg_2); from the "
                                                   "checkpoint when path is set")


def _unwrap(payload: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a 3D-Speaker checkpoint (plain, or under ``state_dict``/``model``/``embedding_model``)."""
    if isinstance(payload, dict):
        for key in ("state_dict", "model", "embedding_model"):
            if isinstance(payload.get(key), dict):
                payload = payload[key]
                break
    if not isinstance(payload, dict) or not payload or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ParameterError(f"{path}: not a state dict (a mapping of parameter names to tensors)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in payload.items()}


class ERes2Net3D(SpeakerModel):
    """3D-Speaker ERes2Net from its published state dict, with 3D-Speaker's fbank + CMN; cosine; CSI-E/SV/OSI."""

    name = "eres2net3d"
    Params = ERes2NetParams
    #: wave (B, 1, T) -> raw log fbank (B, frames, feat_dim) -> final (utterance mean removed)
    stages = (("raw", "compute_fbank"), ("final", "normalize_mean"))
    output = "embedding"
    tasks = (Task.CSI_E, Task.SV, Task.OSI)

    def __init__(self, params=None, **kwargs) -> None:
        super().__init__(params, **kwargs)
        p = self.params
        self._state: dict[str, torch.Tensor] | None = None
        m, emb, num_blocks, two = p.m_channels, p.embedding_size, [3, 4, 6, 3], p.two_emb_layer
        if p.path is not None:
            path = Path(p.path)
            if not path.is_file():
                raise ParameterError(f"eres2net3d: path={path} is not a file (a 3D-Speaker ERes2Net state dict)")
            self._state = _unwrap(read_torch_file(path), path)
            m, emb, num_blocks, two = self._sizes(self._state, path)
        if p.feat_dim % 8:
            raise ParameterError(f"eres2net3d: feat_dim ({p.feat_dim}) must be a multiple of 8")
        self.fbank = KaldiFbank(num_mel_bins=p.feat_dim, scale=1.0, snip_edges=True, dither=0.0)
        self.in_planes = m
        stats_dim = int(p.feat_dim / 8) * m * 8
        self.conv1 = nn.Conv2d(1, m, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m)
        self.layer1 = self._make_layer(m, num_blocks[0], 1, False)
        self.layer2 = self._make_layer(m * 2, num_blocks[1], 2, False)
        self.layer3 = self._make_layer(m * 4, num_blocks[2], 2, True)
        self.layer4 = self._make_layer(m * 8, num_blocks[3], 2, True)
        self.layer1_downsample = nn.Conv2d(m * 2, m * 4, kernel_size=3, stride=2, padding=1, bias=False)
        self.layer2_downsample = nn.Conv2d(m * 4, m * 8, kernel_size=3, padding=1, stride=2, bias=False)
        self.layer3_downsample = nn.Conv2d(m * 8, m * 16, kernel_size=3, padding=1, stride=2, bias=False)
        self.fuse_mode12 = AFF(channels=m * 4)
        self.fuse_mode123 = AFF(channels=m * 8)
        self.fuse_mode1234 = AFF(channels=m * 16)
        n_stats = 1 if p.pooling in ("TAP", "TSDP") else 2
        self.seg_1 = nn.Linear(stats_dim * BasicBlockERes2Net.expansion * n_stats, emb)
        self.two_emb_layer = two
        if two:
            self.seg_bn_1 = nn.BatchNorm1d(emb, affine=False)
            self.seg_2 = nn.Linear(emb, emb)

    def _sizes(self, state: dict[str, torch.Tensor], path: Path) -> tuple[int, int, list[int], bool]:
        """m_channels, embedding_size, num_blocks, two_emb_layer of a checkpoint."""
        for key in ("conv1.weight", "seg_1.weight"):
            if key not in state:
                raise ParameterError(f"{path}: not an ERes2Net state dict (no {key}; keys start with "
                                     f"{', '.join(sorted(state)[:4])} ...)")
        blocks = []
        for n in range(1, 5):
            idx = {int(mt.group(1)) for k in state if (mt := re.match(rf"layer{n}\.(\d+)\.", k))}
            blocks.append(max(idx) + 1 if idx else 0)
        if not all(blocks):
            raise ParameterError(f"{path}: not an ERes2Net state dict (layers with blocks: {blocks})")
        return (int(state["conv1.weight"].shape[0]), int(state["seg_1.weight"].shape[0]), blocks,
                "seg_2.weight" in state)

    def _make_layer(self, planes: int, num_blocks: int, stride: int, fuse: bool) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(BasicBlockERes2Net(self.in_planes, planes, s, self.params.base_width, self.params.scale,
                                             fuse))
            self.in_planes = planes * BasicBlockERes2Net.expansion
        return nn.Sequential(*layers)

    # -- weights ----------------------------------------------------------------------------------------------------
    def load_weights(self, home: Path) -> None:
        """Load the ``path`` state dict strictly (ParameterError naming missing/unexpected/mis-shaped keys)."""
        if self._state is None:
            raise ParameterError("eres2net3d has no shipped weights: give path=FILE (a 3D-Speaker ERes2Net "
                                 "state dict, e.g. pretrained_eres2net.ckpt)")
        try:
            load_state(self, self._state, str(self.params.path))
        except Sec4srError as exc:
            raise ParameterError(str(exc)) from None
        self._state = None

    # -- levels -----------------------------------------------------------------------------------------------------
    def compute_fbank(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) in [-1, 1] -> (B, 1 + (T - 400) // 160, feat_dim) Kaldi log fbank (torchaudio's defaults)."""
        return self.fbank(wave)

    def normalize_mean(self, raw: torch.Tensor) -> torch.Tensor:
        """Remove each utterance's mean over frames (3D-Speaker's ``mean_nor``)."""
        return raw - raw.mean(dim=1, keepdim=True)

    def head(self, final: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, embedding_size) of (B, T, feat_dim) normalised fbank frames."""
        x = final.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
        out = F.relu(self.bn1(self.conv1(x)))
        out1 = self.layer1(out)
        out2 = self.layer2(out1)
        fuse12 = self.fuse_mode12(out2, self.layer1_downsample(out1))
        out3 = self.layer3(out2)
        fuse123 = self.fuse_mode123(out3, self.layer2_downsample(fuse12))
        out4 = self.layer4(out3)
        fuse1234 = self.fuse_mode1234(out4, self.layer3_downsample(fuse123))
        emb = self.seg_1(_pool(fuse1234, self.params.pooling))
        if self.two_emb_layer:
            emb = self.seg_2(self.seg_bn_1(F.relu(emb)))
        return emb
