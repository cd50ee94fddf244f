"""The i-vector / x-vector back-end: mean subtraction, LDA, length normalisation and two-covariance PLDA.

Embedding of a raw vector w (B, D_in) -> u (B, D):

1. ``y = A (w - m) + a`` (``transform.txt`` is [A | a], ``mean.vec`` is m);
2. length normalisation ``y ← y · sqrt(D) / ||y||`` — **with the gradient flowing through the norm** (the
   predecessor took the norm as a Python float);
3. PLDA: ``u = P (y - μ)``, then Kaldi's ``normalize_length``: ``u ← u · sqrt(D / Σ_i u_i² / (ψ_i + 1))``.

Scores are Kaldi's two-covariance log-likelihood ratio with one enrollment example, vectorised over enrolled
speakers: ``log N(u; ψ/(ψ+1) e, 1 + ψ/(ψ+1)) − log N(u; 0, ψ + 1)`` per dimension, summed.

Training (:meth:`PLDABackend.fit`): mean, LDA by the generalised eigenproblem between/within-class scatter
(within-class covariance becomes the identity), then PLDA by simultaneous diagonalisation of the within- and
between-class covariances of the length-normalised LDA outputs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sec4sr_core.sdk import Sec4srError


class PLDABackend(nn.Module):
    """Mean, LDA, length norm and PLDA for ``in_dim``-d vectors projected to ``dim`` dimensions."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        if dim > in_dim:
            raise Sec4srError(f"LDA dimension {dim} exceeds the embedding dimension {in_dim}")
        self.in_dim, self.dim = in_dim, dim
        self.register_buffer("mean", torch.zeros(in_dim))
        lda = torch.zeros(dim, in_dim + 1)
        lda[:, :dim] = torch.eye(dim)
        self.register_buffer("lda", lda)
        self.register_buffer("plda_mean", torch.zeros(dim))
        self.register_buffer("plda_transform", torch.eye(dim))
        self.register_buffer("psi", torch.ones(dim))

    def load_kaldi(self, mean: torch.Tensor, lda: torch.Tensor, plda_mean: torch.Tensor, plda_transform: torch.Tensor,
                   psi: torch.Tensor) -> None:
        """Replace every buffer (sizes come from the files)."""
        if lda.shape[1] != mean.numel() + 1:
            raise Sec4srError(f"LDA transform is {tuple(lda.shape)} but the mean vector has {mean.numel()} values "
                              f"(expected {mean.numel() + 1} columns)")
        if plda_transform.shape[0] != lda.shape[0]:
            raise Sec4srError(f"PLDA dimension {plda_transform.shape[0]} != LDA output dimension {lda.shape[0]}")
        dev = self.mean.device
        self.in_dim, self.dim = mean.numel(), lda.shape[0]
        self.mean = mean.float().to(dev)
        self.lda = lda.float().to(dev)
        self.plda_mean = plda_mean.float().to(dev)
        self.plda_transform = plda_transform.float().to(dev)
        self.psi = psi.float().to(dev)

    # -- forward -----------------------------------------------------------------------------------------------------
    def lda_norm(self, w: torch.Tensor) -> torch.Tensor:
        y = (w - self.mean) @ self.lda[:, :-1].T + self.lda[:, -1]
        return y * (math.sqrt(self.dim) / y.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """PLDA-space embeddings (B, dim) of raw vectors (B, in_dim)."""
        u = (self.lda_norm(w) - self.plda_mean) @ self.plda_transform.T
        dot = (u.pow(2) / (self.psi + 1.0)).sum(dim=-1, keepdim=True)
        return u * torch.sqrt(self.dim / dot.clamp_min(1e-12))

    def score(self, u: torch.Tensor, enrolled: torch.Tensor) -> torch.Tensor:
        """PLDA LLR (B, S) of test embeddings (B, D) against enrolled embeddings (S, D) (one example each)."""
        psi = self.psi.to(u.dtype)
        mean = enrolled.unsqueeze(0) * (psi / (psi + 1.0))  # (1, S, D)
        var = 1.0 + psi / (psi + 1.0)
        diff = u.unsqueeze(1) - mean  # (B, S, D)
        same = -0.5 * (diff.pow(2) / var + var.log()).sum(dim=-1)
        other = -0.5 * (u.pow(2) / (psi + 1.0) + (psi + 1.0).log()).sum(dim=-1, keepdim=True)
        return same - other

    # -- training ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, w: torch.Tensor, labels: torch.Tensor, shrinkage: float = 1e-6) -> None:
        """Train mean, LDA and PLDA on raw vectors (N, in_dim) with integer speaker labels (N,).

        ``shrinkage`` adds ``shrinkage · mean(diag S_w) · I`` to the within-class covariance before LDA. With fewer
        training vectors than dimensions (512-d x-vectors of a small corpus) S_w is singular and an unregularised LDA
        picks its null space: PLDA between-class variances of ~1e10 and scores of ~1e11."""
        w = w.double().cpu()
        labels = labels.cpu()
        classes = labels.unique()
        if classes.numel() <= self.dim:
            raise Sec4srError(f"LDA to {self.dim} dimensions needs more than {self.dim} training speakers "
                              f"(got {classes.numel()}); lower the model's lda_dim")
        mean = w.mean(dim=0)
        x = w - mean
        sw, sb = _scatter(x, labels)
        sw = sw + max(shrinkage, 1e-6) * sw.diagonal().mean() * torch.eye(sw.shape[0], dtype=sw.dtype)
        # generalised eigenproblem sb v = λ sw v with vᵀ sw v = I
        lw = torch.linalg.cholesky(sw)
        lw_inv = torch.linalg.inv(lw)
        evals, evecs = torch.linalg.eigh(lw_inv @ sb @ lw_inv.T)
        order = evals.argsort(descending=True)[: self.dim]
        a = (lw_inv.T @ evecs[:, order]).T  # (dim, in_dim)
        lda = torch.cat([a, torch.zeros(self.dim, 1, dtype=a.dtype)], dim=1)
        self.mean.copy_(mean)
        self.lda.copy_(lda)
        y = x @ a.T  # the LDA outputs (offset 0), length-normalised like lda_norm, on the CPU
        y = y * (math.sqrt(self.dim) / y.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        pm = y.mean(dim=0)
        yw, yb = _scatter(y - pm, labels)
        yw = yw + 1e-6 * yw.diagonal().mean() * torch.eye(self.dim, dtype=yw.dtype)
        lw = torch.linalg.cholesky(yw)
        lw_inv = torch.linalg.inv(lw)
        psi, u = torch.linalg.eigh(lw_inv @ yb @ lw_inv.T)
        order = psi.argsort(descending=True)
        self.plda_mean.copy_(pm)
        self.plda_transform.copy_((u[:, order].T @ lw_inv))
        self.psi.copy_(psi[order].clamp_min(0.0))


def _scatter(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Within-class and between-class covariances (D, D) of centred vectors x (N, D)."""
    classes, inv = labels.unique(return_inverse=True)
    k = classes.numel()
    onehot = torch.nn.functional.one_hot(inv, k).to(x.dtype)  # (N, K)
    counts = onehot.sum(dim=0)
    means = (onehot.T @ x) / counts.unsqueeze(1)  # (K, D)
    within = x - means[inv]
    sw = within.T @ within / x.shape[0]
    sb = (means * counts.unsqueeze(1)).T @ means / x.shape[0]
    return sw, sb
