"""Target selection for targeted attacks, reproducible under the seed."""

from __future__ import annotations

from typing import Sequence

import torch

from .interfaces import REJECT, Task


def batch_seed(*parts) -> int:
    import hashlib

    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def choose_targets(labels: torch.Tensor, utt_ids: Sequence[str], task: Task, n_speakers: int, seed: int) -> torch.Tensor:
    """A random target ≠ true label per utterance (−1 is a legal target for SV/OSI), seeded per utterance."""
    out = []
    for lab, uid in zip(labels.tolist(), utt_ids):
        if task == Task.SV:
            out.append(REJECT if lab == 0 else 0)
            continue
        choices = [c for c in range(n_speakers) if c != lab]
        if task == Task.OSI and lab != REJECT:
            choices.append(REJECT)
        g = torch.Generator().manual_seed(batch_seed(seed, "target", uid))
        out.append(choices[int(torch.randint(len(choices), (1,), generator=g))])
    return torch.tensor(out, dtype=torch.int64)
