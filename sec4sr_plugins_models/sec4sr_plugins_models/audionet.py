"""AudioNet (the predecessor's ``audionet_csine``; Jati et al.'s adaptation of arXiv:1807.03418): a CSI-NE
classifier on a 32-band log-mel spectrogram.

Levels: ``wave`` -> ``raw`` (log-mel (B, T, 32), see :class:`~.frontends.LogMel`) -> ``final`` (= ``raw``).

Network (parameter names as the predecessor's checkpoint): conv1 = Conv2d(1→1, 5×5, pad 2) + BatchNorm2d(1) on the
(32 × T) image; conv2 32→64 k3 p1, BN, ReLU, MaxPool(2); conv3 64→128; conv4 128→128; conv5 128→128 + MaxPool(2);
conv6 128→128; conv7 128→64 + MaxPool(2); conv8 64→32 k3 **p0**; global max over time; fc 32→classes = logits.
Inputs shorter than 3 frames after pooling are tiled along time (as the predecessor).
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field
from torch import nn

from sec4sr_core.sdk import Sec4srError
from sec4sr_core.sdk import SpeakerModel, Task
from sec4sr_core.sdk import Params
from sec4sr_core.sdk import load_state, read_torch_file

from .frontends import LogMel
from .trainable import Trainable


class AudioNetParams(Params):
    checkpoint: Path | None = Field(None, description="the predecessor's AudioNet state_dict; needs label_encoder")
    label_encoder: Path | None = Field(None, description="the predecessor's label-encoder file (\"'<spk>' <int>\" lines)")
    n_mels: int = Field(32, ge=4, description="log-mel bands (32 in the predecessor)")


def _block(cin: int, cout: int, pool: bool, pad: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv1d(cin, cout, 3, padding=pad), nn.BatchNorm1d(cout), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool1d(2))
    return nn.Sequential(*layers)


def read_label_encoder(path: Path | str) -> list[str]:
    """Speaker ids in label order from lines ``'<spk_id>' <int>``."""
    path = Path(path)
    if not path.exists():
        raise Sec4srError(f"label encoder not found: {path}")
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            spk, idx = line.rsplit(None, 1)
            pairs.append((int(idx), spk.strip().strip("'\"")))
        except ValueError:
            raise Sec4srError(f"{path}:{n}: expected \"'<speaker>' <label>\", got {line!r}") from None
    pairs.sort()
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise Sec4srError(f"{path}: labels must be 0..{len(pairs) - 1} without gaps")
    return [s for _, s in pairs]


class AudioNet(Trainable, SpeakerModel):
    """AudioNet CNN classifier on 32-band log-mel (CSI-NE)."""

    name = "audionet"
    Params = AudioNetParams
    #: wave (B, 1, T) -> raw log-mel (B, frames, n_mels) = final
    stages = (("raw", "compute_logmel"), ("final", None))
    output = "logits"
    tasks = (Task.CSI_NE,)
    train_defaults = {"epochs": 10, "lr": 2e-3, "batch_size": 16, "crop_s": 2.0}

    def __init__(self, params=None, **kwargs) -> None:
        super().__init__(params, **kwargs)
        m = self.params.n_mels
        self.logmel = LogMel(n_mels=m)
        self.conv1 = nn.Sequential(nn.Conv2d(1, 1, 5, padding=2), nn.BatchNorm2d(1))
        self.conv2 = _block(m, 64, True)
        self.conv3 = _block(64, 128, False)
        self.conv4 = _block(128, 128, False)
        self.conv5 = _block(128, 128, True)
        self.conv6 = _block(128, 128, False)
        self.conv7 = _block(128, 64, True)
        self.conv8 = _block(64, 32, False, pad=0)
        self.fc = nn.Linear(32, 1)

    def build_classifier(self, n: int) -> None:
        if self.fc.out_features != n:
            self.fc = nn.Linear(32, n).to(self.conv8[0].weight.device)

    def load_weights(self, home: Path, tag: str = "") -> None:
        if self.params.checkpoint is None:
            return super().load_weights(home, tag)
        if self.params.label_encoder is None:
            raise Sec4srError("audionet: checkpoint= needs label_encoder= (the speaker id of every class)")
        payload = read_torch_file(Path(self.params.checkpoint))
        state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
        if not isinstance(state, dict) or "fc.bias" not in state:
            raise Sec4srError(f"{self.params.checkpoint}: not an AudioNet state_dict (no fc.bias)")
        ids = read_label_encoder(self.params.label_encoder)
        if len(ids) != state["fc.bias"].shape[0]:
            raise Sec4srError(f"label encoder has {len(ids)} speakers but the checkpoint has "
                              f"{state['fc.bias'].shape[0]} classes")
        self.set_classes(ids)
        load_state(self, state, str(self.params.checkpoint))

    def compute_logmel(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) waveform -> (B, frames, n_mels) pre-emphasised log-mel power."""
        return self.logmel(wave)

    def head(self, final: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes) of log-mel frames (B, T, n_mels)."""
        x = final.transpose(1, 2).unsqueeze(1)  # (B, 1, mels, T)
        x = self.conv1(x).squeeze(1)
        for block in (self.conv2, self.conv3, self.conv4, self.conv5, self.conv6, self.conv7):
            x = block(x)
        if x.shape[2] < 3:
            x = x.repeat(1, 1, -(-3 // x.shape[2]))
        x = self.conv8(x)
        return self.fc(x.max(dim=2).values)

    def train_logits(self, final: torch.Tensor) -> torch.Tensor:
        return self.head(final)
