"""The embedding networks of WeSpeaker and 3D-Speaker, with the upstream module trees.

Each network maps normalised fbank frames (B, T, F) to embeddings (B, D). Module and parameter names follow the
upstream code exactly (checked by the key-name tests), so a published state dict loads with ``strict=True``:

* :class:`ResNet` — ``wespeaker/models/resnet.py``: ``conv1``, ``bn1``, ``layer1..4`` (BasicBlock / Bottleneck
  with ``conv1..3``, ``bn1..3``, ``shortcut.0/1``), ``pool`` (TSTP, ASTP, ...), ``seg_1``, and with
  ``two_emb_layer`` ``seg_bn_1`` (BatchNorm1d without affine) and ``seg_2``. The embedding is ``seg_2``'s output
  when present, else ``seg_1``'s (what WeSpeaker's extractor takes, ``outputs[-1]``).
* :class:`SimAMResNet` — ``wespeaker/models/samresnet.py`` (VoxBlink2 models): ``front.*`` (conv1, bn1, layer1..4
  with SimAM attention, ``downsample.0/1``), ``pooling.attention.*`` (ASP), ``bottleneck``.
* :class:`EcapaTDNN` — ``wespeaker/models/ecapa_tdnn.py``: ``layer1`` (conv, bn), ``layer2..4.se_res2block.0..3``
  (Conv1dReluBn, Res2Conv1dReluBn ``convs.i``/``bns.i``, Conv1dReluBn, SE ``linear1/2``), ``conv`` (3C -> 1536),
  ``pool``, ``bn``, ``linear``, and with ``emb_bn`` ``bn2``. Convolutions are zero-padded (not SpeechBrain's
  reflection), Res2Net passes its *last* chunk through unchanged, and the SE block uses Linear layers.
* :class:`CAMPPlus` — ``wespeaker/models/campplus.py`` = 3D-Speaker's ``speakerlab/models/campplus/DTDNN.py``
  (same names): ``head.*`` (FCM: conv1, bn1, layer1/2 of BasicResBlock striding frequency only, conv2, bn2),
  ``xvector.tdnn``, ``xvector.block{1,2,3}.tdnnd{j}`` (``nonlinear1``, ``linear1``, ``nonlinear2``,
  ``cam_layer.linear_local/linear1/linear2``), ``xvector.transit{1,2,3}``, ``xvector.out_nonlinear``,
  ``xvector.stats`` (no parameters), ``xvector.dense`` (``linear``, ``nonlinear.batchnorm`` without affine).
  WeSpeaker pools with TSTP (variance + 1e-7), 3D-Speaker with :class:`~.pooling.StatsPool` (no epsilon).

Written for sec4sr (no upstream code copied); in-place activations of the upstream code are out-of-place here, so
every network is safe to differentiate.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .pooling import ASP, POOLING, StatsPool


def _conv_out(n: int) -> int:
    """Length after a 3-tap convolution with stride 2 and padding 1."""
    return (n - 1) // 2 + 1


# ---------------------------------------------------------------------------------------------------------------
# ResNet (WeSpeaker)
# ---------------------------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int | tuple[int, int] = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride not in (1, (1, 1)) or cin != planes * self.expansion:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, planes * self.expansion, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes * self.expansion))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != planes * self.expansion:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, planes * self.expansion, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes * self.expansion))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


def _layer(block: type[nn.Module], cin: int, planes: int, n: int, stride: int) -> tuple[nn.Sequential, int]:
    layers = []
    for s in [stride] + [1] * (n - 1):
        layers.append(block(cin, planes, s))
        cin = planes * block.expansion  # type: ignore[attr-defined]
    return nn.Sequential(*layers), cin


#: WeSpeaker's ResNet depths: model name -> (block, blocks per layer)
RESNETS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "ResNet18": (BasicBlock, (2, 2, 2, 2)), "ResNet34": (BasicBlock, (3, 4, 6, 3)),
    "ResNet50": (Bottleneck, (3, 4, 6, 3)), "ResNet101": (Bottleneck, (3, 4, 23, 3)),
    "ResNet152": (Bottleneck, (3, 8, 36, 3)), "ResNet221": (Bottleneck, (6, 16, 48, 3)),
    "ResNet293": (Bottleneck, (10, 20, 64, 3)),
}


class ResNet(nn.Module):
    """WeSpeaker's ResNet r-vector: 2-D ResNet over (frequency, time), stride 2 in layers 2-4 on both axes,
    pooled over time with frequency × channels flattened (stats_dim = (feat_dim // 8) · m_channels · 8)."""

    def __init__(self, block: type[nn.Module], num_blocks: Sequence[int], m_channels: int = 32, feat_dim: int = 40,
                 embed_dim: int = 128, pooling_func: str = "TSTP", two_emb_layer: bool = False) -> None:
        super().__init__()
        f = feat_dim
        for _ in range(3):
            f = _conv_out(f)
        if f != feat_dim // 8:
            raise ValueError(f"ResNet: feat_dim {feat_dim} must be a multiple of 8 (WeSpeaker's stats_dim assumes "
                             f"feat_dim // 8 = {feat_dim // 8} frequency rows, the layers leave {f})")
        expansion = block.expansion  # type: ignore[attr-defined]
        self.stats_dim = (feat_dim // 8) * m_channels * 8
        self.two_emb_layer = two_emb_layer
        self.conv1 = nn.Conv2d(1, m_channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m_channels)
        cin = m_channels
        self.layer1, cin = _layer(block, cin, m_channels, num_blocks[0], 1)
        self.layer2, cin = _layer(block, cin, m_channels * 2, num_blocks[1], 2)
        self.layer3, cin = _layer(block, cin, m_channels * 4, num_blocks[2], 2)
        self.layer4, cin = _layer(block, cin, m_channels * 8, num_blocks[3], 2)
        self.pool = POOLING[pooling_func](in_dim=self.stats_dim * expansion)
        self.seg_1 = nn.Linear(self.pool.out_dim, embed_dim)
        if two_emb_layer:
            self.seg_bn_1 = nn.BatchNorm1d(embed_dim, affine=False)
            self.seg_2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, T, F) fbank -> (B, embed_dim)."""
        x = feats.transpose(1, 2).unsqueeze(1)  # (B, 1, F, T)
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        emb = self.seg_1(self.pool(x))
        if self.two_emb_layer:
            emb = self.seg_2(self.seg_bn_1(F.relu(emb)))
        return emb


# ---------------------------------------------------------------------------------------------------------------
# SimAM-ResNet (WeSpeaker, VoxBlink2)
# ---------------------------------------------------------------------------------------------------------------


class SimAMBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = nn.Sequential()
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    @staticmethod
    def simam(x: torch.Tensor, lambda_p: float = 1e-4) -> torch.Tensor:
        """Parameter-free SimAM attention over each channel's (F, T) map."""
        n = x.shape[2] * x.shape[3] - 1
        d = (x - x.mean(dim=[2, 3], keepdim=True)).pow(2)
        v = d.sum(dim=[2, 3], keepdim=True) / n
        return x * torch.sigmoid(d / (4 * (v + lambda_p)) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.simam(self.bn2(self.conv2(out)))
        return F.relu(out + self.downsample(x))


class _SimAMTrunk(nn.Module):
    def __init__(self, in_planes: int, num_blocks: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, in_planes, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_planes)
        cin = in_planes
        self.layer1, cin = _layer(SimAMBasicBlock, cin, in_planes, num_blocks[0], 1)
        self.layer2, cin = _layer(SimAMBasicBlock, cin, in_planes * 2, num_blocks[1], 2)
        self.layer3, cin = _layer(SimAMBasicBlock, cin, in_planes * 4, num_blocks[2], 2)
        self.layer4, cin = _layer(SimAMBasicBlock, cin, in_planes * 8, num_blocks[3], 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


SIMAM_RESNETS = {"SimAM_ResNet34_ASP": (3, 4, 6, 3), "SimAM_ResNet100_ASP": (6, 16, 24, 3)}


class SimAMResNet(nn.Module):
    """SimAM-ResNet + ASP + linear ``bottleneck`` (dropout is inactive at evaluation and has no weights)."""

    def __init__(self, num_blocks: Sequence[int], in_planes: int = 64, embed_dim: int = 256, acoustic_dim: int = 80,
                 dropout: float = 0.0) -> None:
        super().__init__()
        f = acoustic_dim
        for _ in range(3):
            f = _conv_out(f)
        if f != acoustic_dim // 8:
            raise ValueError(f"SimAM_ResNet: acoustic_dim {acoustic_dim} must be a multiple of 8")
        self.front = _SimAMTrunk(in_planes, num_blocks)
        self.pooling = ASP(in_planes, acoustic_dim)
        self.bottleneck = nn.Linear(self.pooling.out_dim, embed_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, T, F) fbank -> (B, embed_dim)."""
        return self.bottleneck(self.pooling(self.front(feats.transpose(1, 2).unsqueeze(1))))


# ---------------------------------------------------------------------------------------------------------------
# ECAPA-TDNN (WeSpeaker)
# ---------------------------------------------------------------------------------------------------------------


class Conv1dReluBn(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size: int = 1, padding: int = 0, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel_size, 1, padding, dilation, bias=True)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))


class Res2Conv1dReluBn(nn.Module):
    """Res2Net: ``scale`` chunks; chunks 0..scale-2 go through conv -> relu -> bn, each after adding the previous
    output; the last chunk passes through unchanged."""

    def __init__(self, channels: int, kernel_size: int, padding: int, dilation: int, scale: int = 8) -> None:
        super().__init__()
        if channels % scale:
            raise ValueError(f"ECAPA_TDNN: channels {channels} must be divisible by the Res2Net scale {scale}")
        self.scale, self.width = scale, channels // scale
        self.nums = scale if scale == 1 else scale - 1
        self.convs = nn.ModuleList([nn.Conv1d(self.width, self.width, kernel_size, 1, padding, dilation)
                                    for _ in range(self.nums)])
        self.bns = nn.ModuleList([nn.BatchNorm1d(self.width) for _ in range(self.nums)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.width, dim=1)
        out = []
        sp = parts[0]
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            if i >= 1:
                sp = sp + parts[i]
            sp = bn(F.relu(conv(sp)))
            out.append(sp)
        if self.scale != 1:
            out.append(parts[self.nums])
        return torch.cat(out, dim=1)


class SEConnect(nn.Module):
    def __init__(self, channels: int, bottleneck: int = 128) -> None:
        super().__init__()
        self.linear1 = nn.Linear(channels, bottleneck)
        self.linear2 = nn.Linear(bottleneck, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.linear2(F.relu(self.linear1(x.mean(dim=2)))))
        return x * s.unsqueeze(2)


class SERes2Block(nn.Module):
    def __init__(self, channels: int, kernel_size: int, padding: int, dilation: int, scale: int) -> None:
        super().__init__()
        self.se_res2block = nn.Sequential(
            Conv1dReluBn(channels, channels), Res2Conv1dReluBn(channels, kernel_size, padding, dilation, scale),
            Conv1dReluBn(channels, channels), SEConnect(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.se_res2block(x)


#: WeSpeaker ECAPA factory names -> (channels, global_context_att)
ECAPAS = {"ECAPA_TDNN_c512": (512, False), "ECAPA_TDNN_c1024": (1024, False),
          "ECAPA_TDNN_GLOB_c512": (512, True), "ECAPA_TDNN_GLOB_c1024": (1024, True)}


class EcapaTDNN(nn.Module):
    """WeSpeaker's ECAPA-TDNN: kernels 5/3/3/3, dilations 1/2/3/4, Res2Net scale 8, multi-layer aggregation of
    layers 2-4 into ``out_channels`` (1536 upstream), ReLU, pooling, BN, linear, optional BN."""

    def __init__(self, channels: int = 512, feat_dim: int = 80, embed_dim: int = 192, pooling_func: str = "ASTP",
                 global_context_att: bool = False, emb_bn: bool = False, out_channels: int = 1536) -> None:
        super().__init__()
        self.layer1 = Conv1dReluBn(feat_dim, channels, kernel_size=5, padding=2)
        self.layer2 = SERes2Block(channels, 3, 2, 2, 8)
        self.layer3 = SERes2Block(channels, 3, 3, 3, 8)
        self.layer4 = SERes2Block(channels, 3, 4, 4, 8)
        self.conv = nn.Conv1d(channels * 3, out_channels, kernel_size=1)
        self.pool = POOLING[pooling_func](in_dim=out_channels, global_context_att=global_context_att)
        self.bn = nn.BatchNorm1d(self.pool.out_dim)
        self.linear = nn.Linear(self.pool.out_dim, embed_dim)
        self.emb_bn = emb_bn
        if emb_bn:
            self.bn2 = nn.BatchNorm1d(embed_dim)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, T, F) fbank -> (B, embed_dim)."""
        x = feats.transpose(1, 2)
        o1 = self.layer1(x)
        o2 = self.layer2(o1)
        o3 = self.layer3(o2)
        o4 = self.layer4(o3)
        out = F.relu(self.conv(torch.cat([o2, o3, o4], dim=1)))
        out = self.linear(self.bn(self.pool(out)))
        return self.bn2(out) if self.emb_bn else out


# ---------------------------------------------------------------------------------------------------------------
# CAM++ (WeSpeaker = 3D-Speaker)
# ---------------------------------------------------------------------------------------------------------------


def nonlinear(config_str: str, channels: int) -> nn.Sequential:
    """``batchnorm-relu`` style stacks with the upstream child names (``batchnorm``, ``relu``, ``prelu``);
    ``batchnorm_`` is a BatchNorm1d without affine parameters."""
    seq = nn.Sequential()
    for name in config_str.split("-"):
        if name == "relu":
            seq.add_module("relu", nn.ReLU())
        elif name == "prelu":
            seq.add_module("prelu", nn.PReLU(channels))
        elif name == "batchnorm":
            seq.add_module("batchnorm", nn.BatchNorm1d(channels))
        elif name == "batchnorm_":
            seq.add_module("batchnorm", nn.BatchNorm1d(channels, affine=False))
        else:
            raise ValueError(f"CAM++: unknown nonlinearity {name!r} in config_str {config_str!r}")
    return seq


class TDNNLayer(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, dilation: int = 1,
                 config_str: str = "batchnorm-relu") -> None:
        super().__init__()
        self.linear = nn.Conv1d(cin, cout, kernel_size, stride=stride, padding=(kernel_size - 1) // 2 * dilation,
                                dilation=dilation, bias=False)
        self.nonlinear = nonlinear(config_str, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))


class CAMLayer(nn.Module):
    """Context-aware masking: a local convolution scaled by a sigmoid mask from the utterance mean plus the mean
    of 100-frame segments (``linear1`` -> ReLU -> ``linear2``)."""

    def __init__(self, bn_channels: int, cout: int, kernel_size: int, dilation: int, reduction: int = 2) -> None:
        super().__init__()
        self.linear_local = nn.Conv1d(bn_channels, cout, kernel_size, padding=(kernel_size - 1) // 2 * dilation,
                                      dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(bn_channels, bn_channels // reduction, 1)
        self.linear2 = nn.Conv1d(bn_channels // reduction, cout, 1)

    @staticmethod
    def seg_pooling(x: torch.Tensor, seg_len: int = 100) -> torch.Tensor:
        """Each frame's 100-frame segment mean (the last segment averages what it holds), (B, C, T)."""
        seg = F.avg_pool1d(x, kernel_size=seg_len, stride=seg_len, ceil_mode=True)
        return seg.repeat_interleave(seg_len, dim=-1)[..., : x.shape[-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = x.mean(dim=-1, keepdim=True) + self.seg_pooling(x)
        m = torch.sigmoid(self.linear2(F.relu(self.linear1(context))))
        return self.linear_local(x) * m


class CAMDenseTDNNLayer(nn.Module):
    def __init__(self, cin: int, cout: int, bn_channels: int, kernel_size: int, dilation: int,
                 config_str: str) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"CAM++: kernel size {kernel_size} must be odd")
        self.nonlinear1 = nonlinear(config_str, cin)
        self.linear1 = nn.Conv1d(cin, bn_channels, 1, bias=False)
        self.nonlinear2 = nonlinear(config_str, bn_channels)
        self.cam_layer = CAMLayer(bn_channels, cout, kernel_size, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))


class CAMDenseTDNNBlock(nn.ModuleList):
    """Densely connected CAM layers ``tdnnd1..N``; each appends ``growth`` channels."""

    def __init__(self, num_layers: int, cin: int, growth: int, bn_channels: int, kernel_size: int, dilation: int,
                 config_str: str) -> None:
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"tdnnd{i + 1}", CAMDenseTDNNLayer(cin + i * growth, growth, bn_channels, kernel_size,
                                                               dilation, config_str))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = torch.cat([x, layer(x)], dim=1)
        return x


class TransitLayer(nn.Module):
    def __init__(self, cin: int, cout: int, config_str: str) -> None:
        super().__init__()
        self.nonlinear = nonlinear(config_str, cin)
        self.linear = nn.Conv1d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, cout: int, config_str: str) -> None:
        super().__init__()
        self.linear = nn.Conv1d(cin, cout, 1, bias=False)
        self.nonlinear = nonlinear(config_str, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))
        return self.nonlinear(self.linear(x))


class FCM(nn.Module):
    """CAM++'s front convolution module: 2-D residual layers that halve frequency only (``feat_dim // 8`` rows
    of ``m_channels`` remain), flattened to (B, m_channels·(feat_dim // 8), T)."""

    def __init__(self, m_channels: int = 32, feat_dim: int = 80, num_blocks: Sequence[int] = (2, 2)) -> None:
        super().__init__()
        f = feat_dim
        for _ in range(3):
            f = _conv_out(f)
        if f != feat_dim // 8:
            raise ValueError(f"CAM++: feat_dim {feat_dim} must be a multiple of 8")
        self.conv1 = nn.Conv2d(1, m_channels, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m_channels)
        layers = []
        for n in num_blocks:
            blocks = [BasicBlock(m_channels, m_channels, (2, 1))] + [BasicBlock(m_channels, m_channels, 1)
                                                                     for _ in range(n - 1)]
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2 = layers
        self.conv2 = nn.Conv2d(m_channels, m_channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(m_channels)
        self.out_channels = m_channels * (feat_dim // 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        out = F.relu(self.bn2(self.conv2(self.layer2(self.layer1(out)))))
        return out.reshape(out.shape[0], out.shape[1] * out.shape[2], out.shape[3])


class CAMPPlus(nn.Module):
    """CAM++ (Wang et al., 2023): FCM head, a strided TDNN, three dense CAM blocks (12/24/16 layers, kernel 3,
    dilations 1/2/2) each followed by a halving transit layer, statistics pooling, a dense embedding layer."""

    def __init__(self, feat_dim: int = 80, embed_dim: int = 512, pooling_func: str = "TSTP", growth_rate: int = 32,
                 bn_size: int = 4, init_channels: int = 128, config_str: str = "batchnorm-relu",
                 stats: str = "wespeaker", block_layers: Sequence[int] = (12, 24, 16)) -> None:
        super().__init__()
        if len(block_layers) != 3 or min(block_layers) < 1:
            raise ValueError(f"CAM++: block_layers must be three positive depths, got {list(block_layers)}")
        self.head = FCM(feat_dim=feat_dim)
        channels = self.head.out_channels
        self.xvector = nn.Sequential(OrderedDict([
            ("tdnn", TDNNLayer(channels, init_channels, 5, stride=2, dilation=1, config_str=config_str))]))
        channels = init_channels
        for i, (n, k, d) in enumerate(zip(block_layers, (3, 3, 3), (1, 2, 2))):
            self.xvector.add_module(f"block{i + 1}", CAMDenseTDNNBlock(n, channels, growth_rate,
                                                                       bn_size * growth_rate, k, d, config_str))
            channels += n * growth_rate
            self.xvector.add_module(f"transit{i + 1}", TransitLayer(channels, channels // 2, config_str))
            channels //= 2
        self.xvector.add_module("out_nonlinear", nonlinear(config_str, channels))
        pool = StatsPool(in_dim=channels) if stats == "3dspeaker" else POOLING[pooling_func](in_dim=channels)
        self.xvector.add_module("stats", pool)
        self.xvector.add_module("dense", DenseLayer(pool.out_dim, embed_dim, config_str="batchnorm_"))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, T, F) fbank -> (B, embed_dim)."""
        return self.xvector(self.head(feats.transpose(1, 2)))


def param_count(module: nn.Module) -> int:
    """Number of parameters (what upstream's ``__main__`` prints, in M)."""
    return sum(p.numel() for p in module.parameters())
