"""WeSpeaker's pooling layers (``wespeaker/models/pooling_layers.py``) with the same parameter names, and
3D-Speaker's statistics pooling.

Every layer maps frame-level features (B, C, T), or a ResNet map (B, C, F, T) flattened channel-major to
(B, C·F, T), to one vector per utterance (B, out_dim); the time axis is last. ``out_dim`` is a property.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPS_VAR = 1e-7  # WeSpeaker adds 1e-7 to the variance before the square root


def _frames(x: torch.Tensor) -> torch.Tensor:
    """(B, C, F, T) -> (B, C·F, T); (B, C, T) unchanged."""
    if x.dim() == 4:
        return x.reshape(x.shape[0], x.shape[1] * x.shape[2], x.shape[3])
    if x.dim() != 3:
        raise ValueError(f"pooling expects (B, C, T) or (B, C, F, T) features, got {tuple(x.shape)}")
    return x


class TAP(nn.Module):
    """Temporal average pooling: the mean over frames (out_dim = in_dim)."""

    def __init__(self, in_dim: int = 0, **_: object) -> None:
        super().__init__()
        self.in_dim = in_dim

    @property
    def out_dim(self) -> int:
        return self.in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _frames(x).mean(dim=-1)


class TSDP(TAP):
    """Temporal standard-deviation pooling: sqrt(unbiased variance + 1e-7) over frames (out_dim = in_dim)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(torch.var(_frames(x), dim=-1) + EPS_VAR)


class TSTP(TAP):
    """Temporal statistics pooling (x-vector): [mean, sqrt(unbiased variance + 1e-7)] (out_dim = 2·in_dim)."""

    @property
    def out_dim(self) -> int:
        return 2 * self.in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _frames(x)
        return torch.cat([x.mean(dim=-1), torch.sqrt(torch.var(x, dim=-1) + EPS_VAR)], dim=1)


class ASTP(nn.Module):
    """Attentive statistics pooling (ECAPA-TDNN): per-channel softmax attention over frames from a tanh bottleneck
    (``linear1`` in_dim [·3 with global context] -> bottleneck_dim, ``linear2`` -> in_dim; 1×1 convolutions),
    then the attention-weighted mean and std (variance clamped at 1e-7). out_dim = 2·in_dim."""

    def __init__(self, in_dim: int, bottleneck_dim: int = 128, global_context_att: bool = False, **_: object) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.global_context_att = global_context_att
        self.linear1 = nn.Conv1d(in_dim * (3 if global_context_att else 1), bottleneck_dim, kernel_size=1)
        self.linear2 = nn.Conv1d(bottleneck_dim, in_dim, kernel_size=1)

    @property
    def out_dim(self) -> int:
        return 2 * self.in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _frames(x)
        if self.global_context_att:
            mean = x.mean(dim=-1, keepdim=True).expand_as(x)
            std = torch.sqrt(torch.var(x, dim=-1, keepdim=True) + EPS_VAR).expand_as(x)
            ctx = torch.cat([x, mean, std], dim=1)
        else:
            ctx = x
        alpha = torch.softmax(self.linear2(torch.tanh(self.linear1(ctx))), dim=2)
        mean = (alpha * x).sum(dim=2)
        var = (alpha * x.pow(2)).sum(dim=2) - mean.pow(2)
        return torch.cat([mean, torch.sqrt(var.clamp(min=EPS_VAR))], dim=1)


class MHASTP(nn.Module):
    """Multi-head attentive statistics pooling: the channels split into ``head_num`` chunks, each with its own
    attention stack ``heads_att_trans.<h>.att_<i>`` (1×1 convolutions, tanh between). out_dim = 2·in_dim."""

    def __init__(self, in_dim: int, layer_num: int = 2, head_num: int = 2, d_s: int = 1, bottleneck_dim: int = 64,
                 **_: object) -> None:
        super().__init__()
        if in_dim % head_num:
            raise ValueError(f"MHASTP: in_dim {in_dim} is not divisible by head_num {head_num}")
        self.in_dim, self.head_num = in_dim, head_num
        d_model = in_dim // head_num
        d_s = d_model if d_s > 1 else 1
        dims = [bottleneck_dim] * (layer_num + 1)
        dims[0], dims[-1] = d_model, d_s
        heads = []
        for _h in range(head_num):
            seq = nn.Sequential()
            for i in range(layer_num - 1):
                seq.add_module(f"att_{i}", nn.Conv1d(dims[i], dims[i + 1], 1, 1))
                seq.add_module(f"tanh{i}", nn.Tanh())
            seq.add_module(f"att_{layer_num - 1}", nn.Conv1d(dims[layer_num - 1], dims[layer_num], 1, 1))
            heads.append(seq)
        self.heads_att_trans = nn.ModuleList(heads)

    @property
    def out_dim(self) -> int:
        return 2 * self.in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _frames(x)
        out = []
        for chunk, layer in zip(torch.chunk(x, self.head_num, dim=1), self.heads_att_trans):
            alpha = F.softmax(layer(chunk), dim=-1)
            mean = (alpha * chunk).sum(dim=2)
            var = (alpha * chunk.pow(2)).sum(dim=2) - mean.pow(2)
            out.append(torch.cat([mean, torch.sqrt(var.clamp(min=EPS_VAR))], dim=1))
        return torch.cat(out, dim=1)


class MQMHASTP(nn.Module):
    """Multi-query multi-head attentive statistics pooling: ``query_num`` :class:`MHASTP` (``n_query.<q>``)
    concatenated. out_dim = 2·in_dim·query_num."""

    def __init__(self, in_dim: int, layer_num: int = 2, query_num: int = 2, head_num: int = 8, d_s: int = 2,
                 bottleneck_dim: int = 64, **_: object) -> None:
        super().__init__()
        self.in_dim, self.query_num = in_dim, query_num
        self.n_query = nn.ModuleList([MHASTP(in_dim, layer_num=layer_num, head_num=head_num, d_s=d_s,
                                             bottleneck_dim=bottleneck_dim) for _ in range(query_num)])

    @property
    def out_dim(self) -> int:
        return 2 * self.in_dim * self.query_num

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _frames(x)
        return torch.cat([layer(x) for layer in self.n_query], dim=-1)


class ASP(nn.Module):
    """SimAM-ResNet's attentive statistics pooling: ``attention`` = Conv1d(D, hidden) -> ReLU -> BatchNorm1d ->
    Conv1d(hidden, D) -> softmax over frames, with D = in_planes·8·(acoustic_dim // 8); std clamps the variance at
    1e-5. out_dim = 2·D."""

    def __init__(self, in_planes: int, acoustic_dim: int, hidden_dim: int = 128) -> None:
        super().__init__()
        self.feature_dim = in_planes * 8 * (acoustic_dim // 8)
        self.attention = nn.Sequential(
            nn.Conv1d(self.feature_dim, hidden_dim, kernel_size=1), nn.ReLU(), nn.BatchNorm1d(hidden_dim),
            nn.Conv1d(hidden_dim, self.feature_dim, kernel_size=1), nn.Softmax(dim=2))

    @property
    def out_dim(self) -> int:
        return 2 * self.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _frames(x)
        w = self.attention(x)
        mu = (x * w).sum(dim=2)
        sg = torch.sqrt(((x.pow(2) * w).sum(dim=2) - mu.pow(2)).clamp(min=1e-5))
        return torch.cat([mu, sg], dim=1)


class StatsPool(nn.Module):
    """3D-Speaker's statistics pooling: [mean, unbiased std] over frames, no epsilon (out_dim = 2·in_dim)."""

    def __init__(self, in_dim: int = 0, **_: object) -> None:
        super().__init__()
        self.in_dim = in_dim

    @property
    def out_dim(self) -> int:
        return 2 * self.in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _frames(x)
        return torch.cat([x.mean(dim=-1), x.std(dim=-1, unbiased=True)], dim=-1)


#: WeSpeaker ``pooling_func`` names
POOLING: dict[str, type[nn.Module]] = {"TAP": TAP, "TSDP": TSDP, "TSTP": TSTP, "ASTP": ASTP, "MHASTP": MHASTP,
                                       "MQMHASTP": MQMHASTP}
