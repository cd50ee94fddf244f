"""Helpers for the defense tests: the devices to run on and small seeded speech-like batches."""

from __future__ import annotations

import torch

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def speechlike(b: int = 2, t: int = 8000, seed: int = 0, amp: float = 0.3, device="cpu") -> torch.Tensor:
    """(B, 1, T) seeded speech-like waves in [-amp, amp]: harmonics of a jittered pitch under an envelope + noise."""
    g = torch.Generator().manual_seed(seed)
    n = torch.arange(t, dtype=torch.float64) / 16000
    waves = []
    for _ in range(b):
        f0 = 100 + 100 * torch.rand(1, generator=g, dtype=torch.float64)
        vib = 1 + 0.05 * torch.sin(2 * torch.pi * 3 * n + 6.28 * torch.rand(1, generator=g, dtype=torch.float64))
        phase = 2 * torch.pi * torch.cumsum(f0 * vib, 0) / 16000
        x = sum(torch.sin(h * phase) / h for h in range(1, 12))
        x = x * (0.6 + 0.4 * torch.sin(2 * torch.pi * 2.5 * n) ** 2)
        x = x + 0.05 * torch.randn(t, generator=g, dtype=torch.float64)
        waves.append(amp * x / x.abs().max())
    return torch.stack(waves).unsqueeze(1).to(torch.float32).to(device)
