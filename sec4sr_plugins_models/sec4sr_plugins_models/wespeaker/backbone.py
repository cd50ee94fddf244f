"""Backbones for pretrained speaker-embedding checkpoints in their published formats.

``wespeaker:path=DIR`` — a WeSpeaker model folder (a pretrained download such as ``voxceleb_resnet34``, or an
experiment's ``exp/.../models`` with its ``config.yaml``): ``DIR/config.yaml`` names the network (``model``:
ResNet18…ResNet293, SimAM_ResNet34_ASP / SimAM_ResNet100_ASP, ECAPA_TDNN_c512 / _c1024 / _GLOB_c512 /
_GLOB_c1024, CAMPPlus) and its ``model_args``; ``dataset_args`` gives the front-end (``fbank_args``:
``num_mel_bins``, ``frame_length``, ``frame_shift``; ``resample_rate``; ``cmvn``/``cmvn_args``). ``DIR/avg_model.pt``
is the state dict; its training head (``projection.*``) is dropped, everything else must match by name and shape.
``path`` may also name the ``.pt`` file itself (its folder holds the ``config.yaml``).

``campplus3d:path=FILE.bin`` — a 3D-Speaker CAM++ state dict (``campplus_voxceleb.bin``, ``campplus_cn_common.bin``,
...). It has no config: the embedding size, widths and block depths are read from the tensor shapes; the front-end
is 3D-Speaker's (80-bin fbank of the unscaled waveform, Povey window, mean subtraction) and the pooling its
``StatsPool``. The network code is shared with WeSpeaker's CAM++ (the key names agree).

Levels of both: ``wave`` (B, 1, T) -> ``raw`` (B, frames, mels) log fbank -> ``final`` (per-utterance CMN) ->
embedding (B, D); scores are cosine similarities; a speaker's enrollment is the mean of its L2-normalised
embeddings. Everything is differentiable (white-box attacks) and deterministic (dither 0).

Without ``path`` each builds its flagship architecture with random weights — WeSpeaker's ResNet34 (80 mels,
256-d, TSTP) and 3D-Speaker's VoxCeleb CAM++ (512-d) — for contract checks; loading weights then refuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from sec4sr_core.sdk import (
    ParameterError,
    Params,
    Sec4srError,
    SpeakerModel,
    Task,
    read_torch_file,
)

from . import nets
from .frontend import Fbank, cmvn

#: the networks ``config.yaml`` may name
SUPPORTED = (*nets.RESNETS, *nets.SIMAM_RESNETS, *nets.ECAPAS, "CAMPPlus")

#: model_args accepted per family: the upstream factory's arguments, then sizes the upstream code fixes, which
#: sec4sr also accepts so that tests can build narrow, shallow fixtures: ``m_channels`` (ResNet; an argument of
#: upstream's ResNet class), ``channels``/``out_channels`` (ECAPA: 512/1024 and 1536 upstream), ``block_layers``
#: (CAM++: the dense-block depths, [12, 24, 16] upstream)
_ARGS = {
    "ResNet": ("feat_dim", "embed_dim", "pooling_func", "two_emb_layer", "m_channels"),
    "SimAM": ("in_planes", "embed_dim", "acoustic_dim", "dropout"),
    "ECAPA": ("feat_dim", "embed_dim", "pooling_func", "emb_bn", "channels", "out_channels"),
    "CAMPPlus": ("feat_dim", "embed_dim", "pooling_func", "growth_rate", "bn_size", "init_channels", "config_str",
                 "block_layers"),
}

DEFAULT_CONFIG: dict[str, Any] = {
    "model": "ResNet34",
    "model_args": {"feat_dim": 80, "embed_dim": 256, "pooling_func": "TSTP", "two_emb_layer": False},
    "dataset_args": {"resample_rate": 16000, "fbank_args": {"num_mel_bins": 80, "frame_length": 25,
                                                            "frame_shift": 10}},
}


def _family(model: str) -> str:
    if model in nets.RESNETS:
        return "ResNet"
    if model in nets.SIMAM_RESNETS:
        return "SimAM"
    if model in nets.ECAPAS:
        return "ECAPA"
    if model == "CAMPPlus":
        return "CAMPPlus"
    raise ParameterError(f"WeSpeaker model {model!r} is not supported; supported: {', '.join(SUPPORTED)}")


def build_net(model: str, args: dict[str, Any]) -> nn.Module:
    """The network ``model`` of WeSpeaker's ``get_speaker_model`` built with ``model_args``; unknown names or
    arguments are a :class:`ParameterError`."""
    family = _family(model)
    unknown = sorted(set(args) - set(_ARGS[family]))
    if unknown:
        raise ParameterError(f"config.yaml model_args for {model}: unknown {', '.join(map(repr, unknown))} "
                             f"(accepted: {', '.join(_ARGS[family])})")
    try:
        if family == "ResNet":
            block, depths = nets.RESNETS[model]
            pooling = args.get("pooling_func", "TSTP")
            _check_pooling(model, pooling)
            return nets.ResNet(block, depths, m_channels=int(args.get("m_channels", 32)),
                               feat_dim=int(args.get("feat_dim", 40)), embed_dim=int(args.get("embed_dim", 128)),
                               pooling_func=pooling, two_emb_layer=bool(args.get("two_emb_layer", False)))
        if family == "SimAM":
            return nets.SimAMResNet(nets.SIMAM_RESNETS[model], in_planes=int(args.get("in_planes", 64)),
                                    embed_dim=int(args.get("embed_dim", 256)),
                                    acoustic_dim=int(args.get("acoustic_dim", 80)))
        if family == "ECAPA":
            channels, glob = nets.ECAPAS[model]
            pooling = args.get("pooling_func", "ASTP")
            _check_pooling(model, pooling)
            return nets.EcapaTDNN(channels=int(args.get("channels", channels)), feat_dim=int(args["feat_dim"]),
                                  embed_dim=int(args["embed_dim"]), pooling_func=pooling, global_context_att=glob,
                                  emb_bn=bool(args.get("emb_bn", False)),
                                  out_channels=int(args.get("out_channels", 1536)))
        pooling = args.get("pooling_func", "TSTP")
        _check_pooling(model, pooling)
        return nets.CAMPPlus(feat_dim=int(args.get("feat_dim", 80)), embed_dim=int(args.get("embed_dim", 512)),
                             pooling_func=pooling, growth_rate=int(args.get("growth_rate", 32)),
                             bn_size=int(args.get("bn_size", 4)), init_channels=int(args.get("init_channels", 128)),
                             config_str=str(args.get("config_str", "batchnorm-relu")),
                             block_layers=tuple(int(n) for n in args.get("block_layers", (12, 24, 16))))
    except KeyError as exc:
        raise ParameterError(f"config.yaml model_args for {model}: {exc.args[0]!r} is required") from None
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"config.yaml model_args for {model}: {exc}") from None


def _check_pooling(model: str, pooling: Any) -> None:
    if pooling not in nets.POOLING:
        raise ParameterError(f"config.yaml model_args for {model}: pooling_func {pooling!r} is not supported "
                             f"(supported: {', '.join(nets.POOLING)})")


def read_config(path: Path) -> dict[str, Any]:
    """``config.yaml`` as a dict; a missing or malformed file is a :class:`ParameterError`."""
    import yaml

    if not path.is_file():
        raise ParameterError(f"wespeaker: {path} does not exist; path= must be a WeSpeaker model folder holding "
                             f"config.yaml and avg_model.pt")
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ParameterError(f"wespeaker: cannot read {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), str):
        raise ParameterError(f"wespeaker: {path} has no 'model' entry (a WeSpeaker config names its network, "
                             f"e.g. 'model: ResNet34')")
    if not isinstance(config.get("model_args", {}), dict) or not isinstance(config.get("dataset_args", {}), dict):
        raise ParameterError(f"wespeaker: {path}: model_args and dataset_args must be mappings")
    return config


def state_dict_of(payload: Any, source: Path, expected: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint payload (a state dict, or one under ``state_dict``), without a DataParallel
    ``module.`` prefix and without the training head ``projection.*``."""
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload = payload["state_dict"]
    if not isinstance(payload, dict) or not payload or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise ParameterError(f"{source} is not a state dict of tensors (expected {expected})")
    state = {}
    for key, value in payload.items():
        key = key.removeprefix("module.")
        if not key.startswith("projection."):
            state[key] = value
    return state


def load_strict(net: nn.Module, state: dict[str, torch.Tensor], source: Path, expected: str) -> None:
    """``net.load_state_dict(state, strict=True)``, with a :class:`ParameterError` naming the first missing,
    unexpected and mis-shaped keys and the network that was expected."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})" for k in own
              if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", shapes)):
        if keys:
            more = f", ... ({len(keys)} in all)" if len(keys) > 5 else ""
            problems.append(f"{what}: {', '.join(keys[:5])}{more}")
    if problems:
        raise ParameterError(f"{source} does not fit {expected}: " + "; ".join(problems))
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


class _PretrainedEmbedding(SpeakerModel):
    """Shared levels, head and scoring of the pretrained-format backbones (``self.fbank``, ``self.net``)."""

    #: wave (B, 1, T) -> raw log fbank (B, frames, mels) -> final (per-utterance CMN)
    stages = (("raw", "compute_fbank"), ("final", "normalize"))
    output = "embedding"
    tasks = (Task.CSI_E, Task.SV, Task.OSI)

    fbank: Fbank
    net: nn.Module
    norm_mean: bool = True
    norm_var: bool = False

    def compute_fbank(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) waveform in [-1, 1] -> (B, frames, mels) log Kaldi fbank with the toolkit's settings."""
        return self.fbank(wave)

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """Per-utterance CMN over frames (B, frames, mels) -> same shape."""
        return cmvn(raw, self.norm_mean, self.norm_var)

    def head(self, final: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, D) of normalised fbank frames (B, frames, mels)."""
        return self.net(final)

    def enroll_embeddings(self, embs: torch.Tensor) -> torch.Tensor:
        """The mean of a speaker's L2-normalised embeddings (N, D) -> (D,)."""
        return F.normalize(embs, dim=-1).mean(dim=0)


class WeSpeakerParams(Params):
    path: Path | None = Field(None, description="a WeSpeaker model folder with config.yaml and avg_model.pt (or the "
                                                "avg_model.pt itself); none: ResNet34 with random weights (checks "
                                                "only)")
    window: Literal["hamming", "povey", "hanning", "rectangular"] = Field(
        "hamming", description="fbank analysis window: hamming for WeSpeaker-trained models, povey for the "
                               "3D-Speaker models WeSpeaker's hub redistributes")
    scale: float = Field(32768.0, gt=0, description="waveform factor before the fbank: 32768 (int16 range) for "
                                                    "WeSpeaker-trained models, 1 for 3D-Speaker conversions")


class WeSpeaker(_PretrainedEmbedding):
    """WeSpeaker pretrained model (config.yaml + avg_model.pt: ResNet, SimAM-ResNet, ECAPA-TDNN, CAM++), cosine."""

    name = "wespeaker"
    Params = WeSpeakerParams

    def __init__(self, params=None, **kwargs) -> None:
        super().__init__(params, **kwargs)
        p = self.params
        self.checkpoint: Path | None = None
        if p.path is None:
            config = DEFAULT_CONFIG
        else:
            path = Path(p.path).expanduser()
            folder, self.checkpoint = (path.parent, path) if path.is_file() else (path, path / "avg_model.pt")
            config = read_config(folder / "config.yaml")
        self.config = config
        self.model_type = config["model"]
        args = dict(config.get("model_args") or {})
        self.net = build_net(self.model_type, args)
        data = config.get("dataset_args") or {}
        frontend = data.get("frontend", "fbank")
        if frontend != "fbank":
            raise ParameterError(f"wespeaker: front-end {frontend!r} (dataset_args.frontend) is not supported; "
                                 f"only Kaldi fbank models are")
        fb = dict(data.get("fbank_args") or {})
        mels = int(fb.get("num_mel_bins", 80))
        feat_dim = int(args.get("acoustic_dim" if _family(self.model_type) == "SimAM" else "feat_dim", mels))
        if feat_dim != mels:
            raise ParameterError(f"wespeaker: model_args feat_dim {feat_dim} != fbank_args num_mel_bins {mels}")
        try:
            self.fbank = Fbank(num_mel_bins=mels, frame_length_ms=float(fb.get("frame_length", 25)),
                               frame_shift_ms=float(fb.get("frame_shift", 10)), window=p.window, scale=p.scale,
                               sample_rate=int(data.get("resample_rate", 16000)))
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"wespeaker: dataset_args do not describe a valid fbank: {exc}") from None
        cmvn_args = dict(data.get("cmvn_args") or {})
        enabled = bool(data.get("cmvn", True))
        self.norm_mean = enabled and bool(cmvn_args.get("norm_mean", True))
        self.norm_var = enabled and bool(cmvn_args.get("norm_var", False))

    def load_weights(self, home: Path) -> None:
        if self.checkpoint is None:
            raise Sec4srError("wespeaker: no weights without path=DIR (a WeSpeaker model folder with config.yaml "
                              "and avg_model.pt)")
        if not self.checkpoint.is_file():
            raise ParameterError(f"wespeaker: {self.checkpoint} does not exist (the folder needs avg_model.pt)")
        expected = f"WeSpeaker {self.model_type} (config.yaml model_args {self.config.get('model_args') or {}})"
        state = state_dict_of(read_torch_file(self.checkpoint), self.checkpoint, expected)
        load_strict(self.net, state, self.checkpoint, expected)


# ---------------------------------------------------------------------------------------------------------------
# 3D-Speaker CAM++
# ---------------------------------------------------------------------------------------------------------------

CAMPPLUS_3D = "a 3D-Speaker CAM++ (speakerlab.models.campplus.DTDNN.CAMPPlus) state dict"


def campplus_shape(state: dict[str, torch.Tensor], source: Path, n_mels: int) -> dict[str, Any]:
    """CAM++ constructor arguments read from a state dict's tensor shapes."""
    need = ("xvector.tdnn.linear.weight", "xvector.dense.linear.weight",
            "xvector.block1.tdnnd1.cam_layer.linear_local.weight", "xvector.block1.tdnnd1.linear1.weight")
    absent = [k for k in need if k not in state]
    if absent:
        first = ", ".join(list(state)[:5])
        raise ParameterError(f"{source} is not {CAMPPLUS_3D}: missing keys: {', '.join(absent)} "
                             f"(its first keys: {first})")
    tdnn = state["xvector.tdnn.linear.weight"]
    if tdnn.shape[1] != 32 * (n_mels // 8):
        raise ParameterError(f"{source}: its head gives {tdnn.shape[1]} channels, CAM++ on {n_mels} mels gives "
                             f"{32 * (n_mels // 8)} (set n_mels to the fbank size it was trained with)")
    growth = state["xvector.block1.tdnnd1.cam_layer.linear_local.weight"].shape[0]
    bn = state["xvector.block1.tdnnd1.linear1.weight"].shape[0]
    layers = []
    for b in (1, 2, 3):
        n = 0
        while f"xvector.block{b}.tdnnd{n + 1}.linear1.weight" in state:
            n += 1
        layers.append(n)
    if not all(layers) or bn % growth:
        raise ParameterError(f"{source} is not {CAMPPLUS_3D}: dense blocks of {layers} layers, bottleneck {bn} "
                             f"for growth {growth}")
    return {"embed_dim": state["xvector.dense.linear.weight"].shape[0], "init_channels": tdnn.shape[0],
            "growth_rate": growth, "bn_size": bn // growth, "block_layers": tuple(layers)}


class CAMPPlus3DParams(Params):
    path: Path | None = Field(None, description="a 3D-Speaker CAM++ state dict (.bin/.pt/.ckpt); none: the VoxCeleb "
                                                "architecture (512-d) with random weights (checks only)")
    n_mels: int = Field(80, ge=8, description="fbank bins (3D-Speaker's CAM++ models use 80)")


class CAMPPlus3D(_PretrainedEmbedding):
    """3D-Speaker CAM++ (.bin state dict) on its 80-bin fbank with mean normalisation, cosine; CSI-E/SV/OSI."""

    name = "campplus3d"
    Params = CAMPPlus3DParams

    def __init__(self, params=None, **kwargs) -> None:
        super().__init__(params, **kwargs)
        p = self.params
        self._state: dict[str, torch.Tensor] | None = None
        shape: dict[str, Any] = {"embed_dim": 512}
        if p.path is not None:
            path = Path(p.path).expanduser()
            if not path.is_file():
                raise ParameterError(f"campplus3d: {path} does not exist (path= is a 3D-Speaker CAM++ .bin file)")
            self._state = state_dict_of(read_torch_file(path), path, CAMPPLUS_3D)
            shape = campplus_shape(self._state, path, p.n_mels)
        self.net = nets.CAMPPlus(feat_dim=p.n_mels, stats="3dspeaker", **shape)
        self.fbank = Fbank(num_mel_bins=p.n_mels, frame_length_ms=25.0, frame_shift_ms=10.0, window="povey",
                           scale=1.0)

    def load_weights(self, home: Path) -> None:
        if self.params.path is None:
            raise Sec4srError("campplus3d: no weights without path=FILE (a 3D-Speaker CAM++ .bin state dict)")
        path = Path(self.params.path).expanduser()
        state = self._state if self._state is not None else state_dict_of(read_torch_file(path), path, CAMPPLUS_3D)
        load_strict(self.net, state, path, CAMPPLUS_3D)
        self._state = None
