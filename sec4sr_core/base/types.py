"""The vocabulary every layer shares, free of torch: the sample rate, the reject label, tasks, knowledge levels and
the utterance record."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

SAMPLE_RATE = 16000
#: default length (seconds) of trial and enrollment audio: every utterance is cropped/padded to it
DEFAULT_LENGTH_S = 3.0
REJECT = -1


class Task(str, enum.Enum):
    """The four recognition tasks."""

    CSI_E = "csi-e"  #: closed-set identification with enrollment
    CSI_NE = "csi-ne"  #: closed-set identification without enrollment (a classifier)
    SV = "sv"  #: speaker verification: accept (0) or reject (-1) a claimed identity
    OSI = "osi"  #: open-set identification: an enrolled speaker or reject (-1)

    @property
    def has_threshold(self) -> bool:
        return self in (Task.SV, Task.OSI)

    @property
    def closed_set(self) -> bool:
        return self in (Task.CSI_E, Task.CSI_NE)


class Knowledge(str, enum.Enum):
    """What an attack may see of the system (enforced by its :class:`~sec4sr_core.sdk.oracle.Oracle`)."""

    WHITE_BOX = "white-box"  #: scores, decisions and gradients
    SCORES = "score-based"  #: scores and decisions
    DECISIONS = "decision-based"  #: decisions only


@dataclass(frozen=True)
class Utterance:
    """One audio file of a dataset."""

    path: Path
    speaker: str
    id: str  #: unique within the dataset, used in result rows and output paths
