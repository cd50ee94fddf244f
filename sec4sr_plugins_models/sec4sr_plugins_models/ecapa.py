"""ECAPA-TDNN (Desplanques et al., 2020) on 80-d Kaldi fbank, trained with AAM-softmax; cosine scoring.

Levels: ``wave`` -> ``raw`` (Kaldi log fbank 80, (B, T, 80)) -> ``final`` (per-utterance mean removed, as
SpeechBrain's sentence-level input normalisation).

The module tree and parameter names follow SpeechBrain's ``ECAPA_TDNN`` (``blocks.0.conv.conv.weight``,
``blocks.1.res2net_block.blocks.0.norm.norm.running_mean``, ``asp.tdnn...``, ``asp_bn.norm...``, ``fc.conv...``) and
its convolutions pad "same" by reflection, so a SpeechBrain ``embedding_model.ckpt`` with the same sizes loads from a
local path (``checkpoint=``; ``channels=1024`` for ``spkrec-ecapa-voxceleb``). This ``ecapa`` backbone keeps
sec4sr's Kaldi fbank (what ``sec4sr train`` trains it on); for SpeechBrain's pretrained models use
:class:`SpeechBrainECAPA` (``speechbrain:path=DIR``), which reads the published folder (``hyperparams.yaml`` +
``embedding_model.ckpt``) and runs SpeechBrain's own Fbank and sentence mean normalisation
(:mod:`.speechbrain_fbank`), so the pretrained weights see exactly the features they were trained on.

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

from sec4sr_core.sdk import ParameterError, Sec4srError
from sec4sr_core.sdk import SpeakerModel, Task
from sec4sr_core.sdk import Params
from sec4sr_core.sdk import load_state, read_torch_file

from .frontends import KaldiFbank
from .trainable import Trainable


class SameConv1d(nn.Module):
    """Conv1d with SpeechBrain's "same" reflect padding; the inner module is ``.conv`` (checkpoint names)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, dilation: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.pad = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv1d(cin, cout, kernel_size, dilation=dilation, groups=groups)

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
    def __init__(self, cin: int, cout: int, kernel_size: int, dilation: int, groups: int = 1) -> None:
        super().__init__()
        self.conv = SameConv1d(cin, cout, kernel_size, dilation, groups)
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
    def __init__(self, cin: int, cout: int, scale: int, se_channels: int, kernel_size: int, dilation: int,
                 groups: int = 1) -> None:
        super().__init__()
        self.tdnn1 = TDNNBlock(cin, cout, 1, 1, groups)
        self.res2net_block = Res2NetBlock(cout, scale, kernel_size, dilation)
        self.tdnn2 = TDNNBlock(cout, cout, 1, 1, groups)
        self.se_block = SEBlock(cout, se_channels)
        self.shortcut = SameConv1d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(x) if self.shortcut is not None else x
        return self.se_block(self.tdnn2(self.res2net_block(self.tdnn1(x)))) + residual


class AttentiveStatisticsPooling(nn.Module):
    def __init__(self, channels: int, attention_channels: int, global_context: bool = True) -> None:
        super().__init__()
        self.global_context = global_context
        self.tdnn = TDNNBlock(3 * channels if global_context else channels, attention_channels, 1, 1)
        self.conv = SameConv1d(attention_channels, channels, 1)

    @staticmethod
    def _stats(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = (w * x).sum(dim=2)
        std = torch.sqrt((w * (x - mean.unsqueeze(2)).pow(2)).sum(dim=2).clamp_min(1e-12))
        return mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[2]
        ctx = x
        if self.global_context:
            mean, std = self._stats(x, torch.full_like(x[:, :1], 1.0 / t))
            ctx = torch.cat([x, mean.unsqueeze(2).expand(-1, -1, t), std.unsqueeze(2).expand(-1, -1, t)], dim=1)
        attn = torch.softmax(self.conv(torch.tanh(self.tdnn(ctx))), dim=2)
        mean, std = self._stats(x, attn)
        return torch.cat([mean, std], dim=1).unsqueeze(2)


def build_ecapa(m: nn.Module, input_size: int, channels: list[int], kernel_sizes: list[int], dilations: list[int],
                attention_channels: int, res2net_scale: int, se_channels: int, lin_neurons: int,
                global_context: bool = True, groups: list[int] | None = None) -> None:
    """Add SpeechBrain ``ECAPA_TDNN``'s layers to ``m`` under its attribute names (``blocks``, ``mfa``, ``asp``,
    ``asp_bn``, ``fc``): one TDNN block, ``len(channels) - 2`` SE-Res2Net blocks, the multi-layer aggregation."""
    groups = list(groups or [1] * len(channels))
    if not len(channels) == len(kernel_sizes) == len(dilations) == len(groups) or len(channels) < 3:
        raise ParameterError(f"ECAPA_TDNN: channels {channels}, kernel_sizes {kernel_sizes}, dilations {dilations} "
                             f"and groups {groups} must have the same length (>= 3)")
    for c in channels[1:-1]:
        if c % res2net_scale:
            raise ParameterError(f"ECAPA_TDNN: channels ({c}) must be divisible by res2net_scale ({res2net_scale})")
    m.blocks = nn.ModuleList([TDNNBlock(input_size, channels[0], kernel_sizes[0], dilations[0], groups[0])])
    for i in range(1, len(channels) - 1):
        m.blocks.append(SERes2NetBlock(channels[i - 1], channels[i], res2net_scale, se_channels, kernel_sizes[i],
                                       dilations[i], groups[i]))
    m.mfa = TDNNBlock(channels[-2] * (len(channels) - 2), channels[-1], kernel_sizes[-1], dilations[-1], groups[-1])
    m.asp = AttentiveStatisticsPooling(channels[-1], attention_channels, global_context)
    m.asp_bn = BN(2 * channels[-1])
    m.fc = SameConv1d(2 * channels[-1], lin_neurons, 1)


def ecapa_forward(m: nn.Module, final: torch.Tensor) -> torch.Tensor:
    """``ECAPA_TDNN.forward`` of the layers :func:`build_ecapa` added: (B, T, feats) -> (B, lin_neurons)."""
    x = final.transpose(1, 2)
    outs = []
    for block in m.blocks:
        x = block(x)
        outs.append(x)
    x = m.mfa(torch.cat(outs[1:], dim=1))
    x = m.asp_bn(m.asp(x))
    return m.fc(x).squeeze(2)


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
        self.fbank = KaldiFbank(num_mel_bins=p.n_mels, snip_edges=False, dither=p.dither, noise_floor=p.noise_floor)
        build_ecapa(self, p.n_mels, [c, c, c, c, 3 * c], [5, 3, 3, 3, 1], [1, 2, 3, 4, 1], p.attention_channels,
                    p.res2net_scale, p.se_channels, p.lin_neurons)
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
        return ecapa_forward(self, final)

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


# --------------------------------------------------------------------------------------------------------------------
# SpeechBrain's published format: a folder with hyperparams.yaml + embedding_model.ckpt (+ mean_var_norm_emb.ckpt)
# --------------------------------------------------------------------------------------------------------------------

_FBANK_ARGS = {"n_mels", "sample_rate", "f_min", "f_max", "n_fft", "win_length", "hop_length", "deltas", "context",
               "requires_grad", "filter_shape", "param_change_factor", "param_rand_factor", "left_frames",
               "right_frames"}
_ECAPA_ARGS = {"input_size", "device", "lin_neurons", "activation", "channels", "kernel_sizes", "dilations",
               "attention_channels", "res2net_scale", "se_channels", "global_context", "groups", "dropout"}


def _tagged(hp: dict, key: str, suffix: str) -> dict | None:
    """The hyperparameter ``key`` if it is a ``!new:``/``!name:`` node of a class ending in ``suffix``, else the
    first top-level node of such a class, else None."""
    nodes = [hp.get(key)] + [v for k, v in hp.items() if k != key]
    for node in nodes:
        if isinstance(node, dict) and str(node.get("__tag__", "")).endswith(suffix):
            return node
    return None


def _args(node: dict) -> dict:
    return {k: v for k, v in node.items() if not k.startswith("__")}


#: the architecture of speechbrain/spkrec-ecapa-voxceleb's hyperparams.yaml (used when no ``path`` is given)
SPKREC_ECAPA_VOXCELEB = {
    "compute_features": {"__tag__": "!new:speechbrain.lobes.features.Fbank", "n_mels": 80},
    "mean_var_norm": {"__tag__": "!new:speechbrain.processing.features.InputNormalization",
                      "norm_type": "sentence", "std_norm": False},
    "embedding_model": {"__tag__": "!new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN", "input_size": 80,
                        "channels": [1024, 1024, 1024, 1024, 3072], "kernel_sizes": [5, 3, 3, 3, 1],
                        "dilations": [1, 2, 3, 4, 1], "attention_channels": 128, "lin_neurons": 192},
}


class SpeechBrainParams(Params):
    path: Path | None = Field(None, description="a SpeechBrain model folder (e.g. spkrec-ecapa-voxceleb): "
                              "hyperparams.yaml, embedding_model.ckpt, optionally mean_var_norm_emb.ckpt (none: "
                              "spkrec-ecapa-voxceleb's architecture with random weights, nothing to load)")
    embedding_norm: bool = Field(False, description="subtract mean_var_norm_emb's global mean from embeddings, as "
                                 "EncoderClassifier.encode_batch(normalize=True) does (SpeechBrain's verification "
                                 "does not)")


class SpeechBrainECAPA(SpeakerModel):
    """SpeechBrain ECAPA-TDNN from its published folder (hyperparams.yaml + embedding_model.ckpt), with
    SpeechBrain's own Fbank and sentence mean normalisation; cosine scoring; CSI-E/SV/OSI.

    Everything is read from ``hyperparams.yaml``: ``compute_features`` (``Fbank``: n_mels, f_min, f_max, n_fft,
    window and hop), ``mean_var_norm`` (``InputNormalization``, sentence-level) and ``embedding_model``
    (``ECAPA_TDNN``: channels, kernel sizes, dilations, attention/SE sizes, Res2Net scale, groups, lin_neurons).
    ``embedding_model.ckpt`` loads by key name, strictly (a mismatch is a ParameterError naming the keys).
    Levels: ``wave`` -> ``raw`` (SpeechBrain Fbank dB, (B, T//160 + 1, n_mels)) -> ``final`` (sentence-normalised).
    """

    name = "speechbrain"
    Params = SpeechBrainParams
    stages = (("raw", "compute_fbank"), ("final", "normalize"))
    output = "embedding"
    tasks = (Task.CSI_E, Task.SV, Task.OSI)

    def __init__(self, params=None, **kwargs) -> None:
        from .speechbrain_fbank import SpeechBrainFbank, read_hyperparams

        super().__init__(params, **kwargs)
        if self.params.path is None:
            yaml_path, hp = "spkrec-ecapa-voxceleb", SPKREC_ECAPA_VOXCELEB
        else:
            folder = Path(self.params.path)
            if not folder.is_dir():
                raise ParameterError(f"speechbrain: path={folder} is not a folder (give the model folder holding "
                                     f"hyperparams.yaml and embedding_model.ckpt)")
            yaml_path = folder / "hyperparams.yaml"
            hp = read_hyperparams(yaml_path)
        feats = _tagged(hp, "compute_features", "lobes.features.Fbank")
        if feats is None:
            raise ParameterError(f"{yaml_path}: no speechbrain.lobes.features.Fbank (compute_features); only "
                                 f"Fbank front-ends are supported")
        fa = _args(feats)
        unknown = sorted(set(fa) - _FBANK_ARGS)
        if unknown:
            raise ParameterError(f"{yaml_path}: compute_features has unsupported arguments: {', '.join(unknown)}")
        for flag in ("deltas", "context", "requires_grad"):
            if fa.get(flag):
                raise ParameterError(f"{yaml_path}: compute_features {flag}=True is not supported")
        if fa.get("filter_shape", "triangular") != "triangular":
            raise ParameterError(f"{yaml_path}: compute_features filter_shape={fa['filter_shape']!r}; only "
                                 f"'triangular' is supported")
        if int(fa.get("sample_rate", 16000)) != 16000:
            raise ParameterError(f"{yaml_path}: sample_rate {fa['sample_rate']}; sec4sr works at 16000 Hz")
        self.fbank = SpeechBrainFbank(
            n_mels=int(fa.get("n_mels", 40)), f_min=float(fa.get("f_min", 0)),
            f_max=None if fa.get("f_max") is None else float(fa["f_max"]), n_fft=int(fa.get("n_fft", 400)),
            win_length=float(fa.get("win_length", 25)), hop_length=float(fa.get("hop_length", 10)))
        norm = _tagged(hp, "mean_var_norm", "features.InputNormalization")
        self.std_norm = False
        self.sentence_norm = norm is not None
        if norm is not None:
            na = _args(norm)
            if na.get("norm_type", "global") != "sentence":
                raise ParameterError(f"{yaml_path}: mean_var_norm norm_type={na.get('norm_type', 'global')!r}; "
                                     f"only sentence-level input normalisation is supported")
            self.std_norm = bool(na.get("std_norm", True))
        emb = _tagged(hp, "embedding_model", "ECAPA_TDNN.ECAPA_TDNN")
        if emb is None:
            node = hp.get("embedding_model")
            what = node.get("__tag__") if isinstance(node, dict) else node
            raise ParameterError(f"{yaml_path}: embedding_model is {what!r}; only "
                                 f"speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN is supported")
        ea = _args(emb)
        unknown = sorted(set(ea) - _ECAPA_ARGS)
        if unknown:
            raise ParameterError(f"{yaml_path}: embedding_model has unsupported arguments: {', '.join(unknown)}")
        act = ea.get("activation")
        if act is not None and not str(act.get("__tag__", "") if isinstance(act, dict) else act).endswith("ReLU"):
            raise ParameterError(f"{yaml_path}: embedding_model activation {act!r}; only ReLU is supported")
        try:
            self.input_size = int(ea["input_size"])
            channels = [int(c) for c in ea.get("channels", [512, 512, 512, 512, 1536])]
            build_ecapa(self, self.input_size, channels, [int(k) for k in ea.get("kernel_sizes", [5, 3, 3, 3, 1])],
                        [int(d) for d in ea.get("dilations", [1, 2, 3, 4, 1])],
                        int(ea.get("attention_channels", 128)), int(ea.get("res2net_scale", 8)),
                        int(ea.get("se_channels", 128)), int(ea.get("lin_neurons", 192)),
                        bool(ea.get("global_context", True)), ea.get("groups"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ParameterError(f"{yaml_path}: bad embedding_model arguments: {type(exc).__name__}: {exc}") from None
        if self.input_size != self.fbank.n_mels:
            raise ParameterError(f"{yaml_path}: embedding_model input_size {self.input_size} != compute_features "
                                 f"n_mels {self.fbank.n_mels}")
        lin = int(ea.get("lin_neurons", 192))
        self.register_buffer("emb_mean", torch.zeros(lin), persistent=False)
        self.register_buffer("emb_std", torch.ones(lin), persistent=False)

    # -- weights ----------------------------------------------------------------------------------------------------
    def load_weights(self, home: Path) -> None:
        """``embedding_model.ckpt`` strictly by key name; ``mean_var_norm_emb.ckpt`` when ``embedding_norm``."""
        if self.params.path is None:
            raise ParameterError("speechbrain has no shipped weights: give path=DIR (a SpeechBrain model folder, e.g. "
                                 "spkrec-ecapa-voxceleb with hyperparams.yaml and embedding_model.ckpt)")
        folder = Path(self.params.path)
        ckpt = folder / "embedding_model.ckpt"
        if not ckpt.is_file():
            raise ParameterError(f"speechbrain: {ckpt} is missing (the ECAPA_TDNN state_dict of the model folder)")
        state = read_torch_file(ckpt)
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ParameterError(f"{ckpt}: not a state_dict (a mapping of parameter names to tensors)")
        try:
            load_state(self, state, str(ckpt))
        except Sec4srError as exc:
            raise ParameterError(str(exc)) from None
        if self.params.embedding_norm:
            stats_path = folder / "mean_var_norm_emb.ckpt"
            if not stats_path.is_file():
                raise ParameterError(f"speechbrain: embedding_norm=true needs {stats_path}")
            stats = read_torch_file(stats_path)
            mean = stats.get("glob_mean") if isinstance(stats, dict) else None
            if not isinstance(mean, torch.Tensor) or mean.reshape(-1).shape != self.emb_mean.shape:
                raise ParameterError(f"{stats_path}: expected InputNormalization statistics with a glob_mean of "
                                     f"{tuple(self.emb_mean.shape)}")
            self.emb_mean.copy_(mean.reshape(-1).float())
            # the published hyperparams use std_norm: False for mean_var_norm_emb; the std is applied only when set
            hp_norm = self._emb_norm_std(folder)
            if hp_norm and isinstance(stats.get("glob_std"), torch.Tensor):
                self.emb_std.copy_(stats["glob_std"].reshape(-1).float())

    @staticmethod
    def _emb_norm_std(folder: Path) -> bool:
        from .speechbrain_fbank import read_hyperparams

        node = read_hyperparams(folder / "hyperparams.yaml").get("mean_var_norm_emb")
        return bool(_args(node).get("std_norm", True)) if isinstance(node, dict) else False

    # -- levels -----------------------------------------------------------------------------------------------------
    def compute_fbank(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) waveform -> (B, T // 160 + 1, n_mels) SpeechBrain Fbank (dB)."""
        return self.fbank(wave)

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Sentence-level InputNormalization (mean only unless the yaml sets std_norm) -> same shape."""
        from .speechbrain_fbank import sentence_norm

        return sentence_norm(raw, self.std_norm) if self.sentence_norm else raw

    def head(self, final: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, lin_neurons) of normalised (B, T, n_mels) features."""
        emb = ecapa_forward(self, final)
        if self.params.embedding_norm:
            emb = (emb - self.emb_mean) / self.emb_std.clamp_min(1e-10)
        return emb

    def enroll_embeddings(self, embs: torch.Tensor) -> torch.Tensor:
        return F.normalize(embs, dim=-1).mean(dim=0)
