"""Feature Compression (FeCo; Chen et al., SEC4SR): replace the frames of a feature tensor by k cluster means.

Input (B, F, D) at any feature level of the model; output (B, k, D) with ``k = max(1, int(F · ratio))`` rows for
**every** utterance, in temporal order (by the mean frame index of each cluster). The output is
``W @ x`` with ``W`` (B, k, F) the row-normalised one-hot cluster membership: the assignment is a constant, so the
output is differentiable w.r.t. the features and its gradient is that of the forward pass (``W`` is computed
without gradient and used as is).

Methods:

* ``kmeans`` — batched Lloyd iterations in torch (all utterances at once, a fixed number of iterations, on the
  input's device; an utterance that reaches a fixed point leaves the batch early, which changes nothing in its
  result). ``distance="l2"`` is the squared Euclidean distance; ``"cos"`` is spherical k-means (frames and
  centroids normalised, assignment by cosine similarity). Initial centroids are k distinct frames drawn from the
  defense's seeded generator (``init="random"``, the predecessor's behaviour; randomized, attack it with EOT) or
  the trace-segmentation means (``init="ts"``, deterministic). An empty cluster takes the frame farthest from its
  centroid among clusters with more than one frame, so every utterance has exactly k non-empty clusters. (Before
  2026-11-26 a singleton cluster's frame could be taken too, leaving that cluster empty, when frame 0 was it.)
* ``warped`` — warped k-means (Leiva & Vidal): k contiguous segments minimising the within-segment squared error.
  Start from trace segmentation (``init="ts"``: equal cumulative frame-to-frame path length per segment) or k-1
  distinct random cuts (``init="random"``). Then move boundaries while the error drops. Instead of moving one
  frame at a time in nested Python loops, each pass moves every even-numbered boundary (then every odd one) to
  its best position between its neighbours; boundaries of one parity never share a segment, so the moves are
  independent, batched over utterances and boundaries, and never increase the error. Segment errors come from
  prefix sums in float64 (O(1) per candidate). Stops when nothing moves or after ``iters`` passes.

``ratio = 1`` keeps every frame (identity, k = F).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator

from sec4sr_core.sdk import ParameterError
from sec4sr_core.sdk import Defense
from sec4sr_core.sdk import Params


def n_clusters(frames: int, ratio: float) -> int:
    return max(1, min(frames, int(frames * ratio)))


def _one_hot_means(assign: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """(B, F) cluster ids -> W (B, k, F), rows normalised to sum 1 (an empty row stays 0)."""
    w = torch.nn.functional.one_hot(assign, k).to(dtype).transpose(1, 2)
    return w / w.sum(dim=2, keepdim=True).clamp(min=1)


def temporal_order(w: torch.Tensor) -> torch.Tensor:
    """Sort the k rows of W (B, k, F) by their mean frame index (stable: ties keep the cluster order)."""
    f = w.shape[2]
    centre = w @ torch.arange(f, device=w.device, dtype=w.dtype)  # (B, k)
    order = torch.sort(centre, dim=1, stable=True).indices
    return torch.gather(w, 1, order.unsqueeze(-1).expand_as(w))


# ----------------------------------------------------------------------------------------------------------------
# k-means
# ----------------------------------------------------------------------------------------------------------------


def _prepare(x: torch.Tensor, distance: str) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1) if distance == "cos" else x


def _assign(points: torch.Tensor, cent: torch.Tensor, distance: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(assignment (B, F), distance of each point to its centroid (B, F))."""
    if distance == "cos":
        sim = points @ torch.nn.functional.normalize(cent, dim=-1).transpose(1, 2)  # (B, F, k)
        best, idx = sim.max(dim=2)
        return idx, 1.0 - best
    # |x - c|² = |x|² - 2 x·c + |c|²; |x|² does not change the argmin, so it is added after
    d = torch.baddbmm(cent.pow(2).sum(-1).unsqueeze(1), points, cent.transpose(1, 2), alpha=-2.0)  # (B, F, k)
    best, idx = d.min(dim=2)
    return idx, (best + points.pow(2).sum(-1)).clamp(min=0)


def _fill_empty(assign: torch.Tensor, dist: torch.Tensor, k: int) -> torch.Tensor:
    """Make every cluster non-empty, deterministically and in one batched step: each non-empty cluster keeps its
    closest frame (the first on ties); the E empty clusters (in id order) take the E farthest of the other frames
    (B, F ≥ k). O(B·F) memory: per-cluster minima by ``scatter_reduce``, no (B, k, F) one-hot."""
    b, f = assign.shape
    counts = torch.zeros(b, k, dtype=torch.long, device=assign.device).scatter_add_(1, assign, torch.ones_like(assign))
    empty = counts == 0  # (B, k)
    if not bool(empty.any()):
        return assign
    inf = torch.full((b, k), float("inf"), dtype=dist.dtype, device=dist.device)
    closest = inf.scatter_reduce(1, assign, dist, "amin")  # (B, k); inf for empty clusters
    frame = torch.arange(f, device=assign.device).expand(b, f)
    candidate = torch.where(dist == closest.gather(1, assign), frame, torch.full_like(frame, f))
    keeper = torch.full((b, k), f, dtype=torch.long, device=assign.device).scatter_reduce(1, assign, candidate, "amin")
    # column f is a dummy that absorbs the empty clusters' keeper (= f), so no two writes ever collide
    kept = torch.zeros(b, f + 1, dtype=torch.bool, device=assign.device).scatter_(1, keeper, True)[:, :f]
    score = torch.where(kept, torch.full_like(dist, -float("inf")), dist)
    frames = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :k]  # farthest movable frames
    clusters = torch.sort((~empty).to(torch.int8), dim=1, stable=True).indices  # empty cluster ids first
    take = torch.arange(k, device=assign.device).unsqueeze(0) < empty.sum(dim=1, keepdim=True)
    return assign.scatter(1, frames, torch.where(take, clusters, assign.gather(1, frames)))


def kmeans_assign(
    x: torch.Tensor, k: int, iters: int, distance: str, init: torch.Tensor) -> torch.Tensor:
    """Batched Lloyd k-means. ``x`` (B, F, D), ``init`` (B, k, D) initial centroids; returns assignments (B, F).

    ``iters`` Lloyd iterations, each: centroids of the (repaired) assignment, then the new assignment. Every cluster
    is non-empty in the result (see :func:`_fill_empty`). An utterance whose repaired assignment did not change in
    an iteration has reached a fixed point — every further iteration would reproduce it — so it leaves the batch;
    the result is that of running all ``iters`` iterations on every utterance. Runs without gradient.
    """
    with torch.no_grad():
        pts = _prepare(x, distance)
        assign = _fill_empty(*_assign(pts, _prepare(init, distance), distance), k)
        result = assign.clone()
        active = torch.arange(x.shape[0], device=x.device)
        for _ in range(iters):
            new = _fill_empty(*_assign(pts, _one_hot_means(assign, k, pts.dtype) @ pts, distance), k)
            moving = (new != assign).any(dim=1)
            result[active] = new
            if not bool(moving.all()):
                if not bool(moving.any()):
                    break
                active, pts, new = active[moving], pts[moving], new[moving]
            assign = new
        return result


# ----------------------------------------------------------------------------------------------------------------
# warped k-means
# ----------------------------------------------------------------------------------------------------------------


def trace_segmentation(x: torch.Tensor, k: int) -> torch.Tensor:
    """Boundaries (B, k+1) (0 = b_0 < ... < b_k = F) splitting the cumulative frame-to-frame L2 path length
    into k equal parts, fixed up so every segment has at least one frame."""
    b, f, _ = x.shape
    step = (x[:, 1:] - x[:, :-1]).norm(dim=-1)  # (B, F-1)
    cum = torch.cat([torch.zeros(b, 1, device=x.device, dtype=x.dtype), step.cumsum(dim=1)], dim=1)  # (B, F)
    total = cum[:, -1:]
    targets = total * torch.arange(1, k, device=x.device, dtype=x.dtype) / k  # (B, k-1)
    cuts = torch.searchsorted(cum.contiguous(), targets.contiguous(), right=True)  # first frame after the target
    return _fix_cuts(cuts, f, k)


def _fix_cuts(cuts: torch.Tensor, f: int, k: int) -> torch.Tensor:
    """Make k-1 cuts strictly increasing in [1, F-1] (minimal changes) and add b_0 = 0, b_k = F."""
    b = cuts.shape[0]
    j = torch.arange(1, k, device=cuts.device)
    c = (cuts - j).clamp(0, f - k)
    c = torch.cummax(c, dim=1).values + j
    zero = torch.zeros(b, 1, dtype=torch.long, device=cuts.device)
    return torch.cat([zero, c.long(), torch.full_like(zero, f)], dim=1)


def random_cuts(b: int, f: int, k: int, generator: torch.Generator, device) -> torch.Tensor:
    """Boundaries (B, k+1) from k-1 distinct random cut points in [1, F-1]."""
    perm = torch.rand(b, f - 1, generator=generator, device=device).argsort(dim=1)[:, : k - 1] + 1
    cuts = perm.sort(dim=1).values
    zero = torch.zeros(b, 1, dtype=torch.long, device=device)
    return torch.cat([zero, cuts, torch.full_like(zero, f)], dim=1)


def _segment_cost(s2: torch.Tensor, diag: torch.Tensor, grow: torch.Tensor, a: torch.Tensor,
                  c: torch.Tensor) -> torch.Tensor:
    """Squared error of the segments [a, c) (B, m, P) from prefix sums: ``s2`` (B, F+1) of |x|², ``diag`` (B, F+1)
    = |S1_i|², ``grow`` (B, m, P) = S1_a·S1_c, with S1 the prefix sums of x. An empty segment costs +inf."""
    n = (c - a).to(s2.dtype)
    sq = diag.gather(1, c.flatten(1)).view_as(n) + diag.gather(1, a.flatten(1)).view_as(n) - 2 * grow
    sse = s2.gather(1, c.flatten(1)).view_as(n) - s2.gather(1, a.flatten(1)).view_as(n) - sq / n.clamp(min=1)
    return torch.where(n > 0, sse, torch.full_like(sse, float("inf")))


def _rows(g: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``g[b, rows[b, m], cols[b, m, w]]`` for g (B, N, N), rows (B, m), cols (B, m, W)."""
    b, n, _ = g.shape
    flat = (rows.unsqueeze(-1) * n + cols).flatten(1)
    return g.flatten(1).gather(1, flat).view_as(cols)


def warped_kmeans_bounds(x: torch.Tensor, bounds: torch.Tensor, iters: int) -> torch.Tensor:
    """Improve segment boundaries (B, k+1) by alternating best-position moves of even and odd boundaries."""
    with torch.no_grad():
        b, f, _ = x.shape
        k = bounds.shape[1] - 1
        if k <= 1 or k >= f:
            return bounds
        xd = x.to(torch.float64)
        zero = torch.zeros(b, 1, xd.shape[2], dtype=xd.dtype, device=x.device)
        s1 = torch.cat([zero, xd.cumsum(dim=1)], dim=1)  # (B, F+1, D)
        s2 = torch.cat([zero[..., 0], xd.pow(2).sum(-1).cumsum(dim=1)], dim=1)  # (B, F+1)
        g = s1 @ s1.transpose(1, 2)  # (B, F+1, F+1), symmetric
        diag = g.diagonal(dim1=1, dim2=2)
        bounds = bounds.clone()
        for _ in range(iters):
            moved = False
            for parity in (0, 1):
                idx = torch.arange(1 + parity, k, 2, device=x.device)  # inner boundaries of this parity
                if idx.numel() == 0:
                    continue
                m = idx.numel()
                lo = bounds[:, idx - 1]  # (B, m): the boundary moves strictly between its neighbours
                hi = bounds[:, idx + 1]
                width = int((hi - lo).max()) - 1  # candidates per boundary (at least 1)
                c = (lo.unsqueeze(-1) + 1 + torch.arange(width, device=x.device)).clamp(max=f)  # (B, m, W)
                left = lo.unsqueeze(-1).expand_as(c)
                right = hi.unsqueeze(-1).expand_as(c)
                cost = _segment_cost(s2, diag, _rows(g, lo, c), left, c) + \
                    _segment_cost(s2, diag, _rows(g, hi, c), c, right)
                cost = torch.where((c > left) & (c < right), cost, torch.full_like(cost, float("inf")))
                current = torch.gather(cost, 2, (bounds[:, idx] - lo - 1).unsqueeze(-1)).squeeze(-1)
                best_cost, best = cost.min(dim=2)
                best = lo + 1 + best
                # move only on a strict improvement (beyond round-off), so the passes terminate
                better = best_cost < current - 1e-9 * current.abs().clamp(min=1.0)
                if bool(better.any()):
                    moved = True
                    bounds[:, idx] = torch.where(better, best, bounds[:, idx])
            if not moved:
                break
        return bounds


def segments_to_assign(bounds: torch.Tensor, f: int) -> torch.Tensor:
    """Boundaries (B, k+1) -> segment id of every frame (B, F)."""
    frames = torch.arange(f, device=bounds.device).expand(bounds.shape[0], f).contiguous()
    return torch.searchsorted(bounds[:, 1:-1].contiguous(), frames, right=True)


# ----------------------------------------------------------------------------------------------------------------
# the defense
# ----------------------------------------------------------------------------------------------------------------


class FeCoParams(Params):
    method: Literal["kmeans", "warped"] = Field("kmeans", description="kmeans (clusters) or warped (contiguous "
                                                                      "segments, warped k-means)")
    ratio: float = Field(0.5, gt=0.0, le=1.0, description="output frames as a fraction of input frames "
                                                         "(k = max(1, int(frames·ratio)))")
    distance: Literal["l2", "cos"] = Field("l2", description="k-means distance: squared L2 or cosine")
    init: Literal["auto", "random", "ts"] = Field(
        "auto", description="initialisation: random (seeded) or ts (trace segmentation); auto = random for "
                            "kmeans, ts for warped")
    iters: int = Field(20, ge=0, le=1000, description="k-means Lloyd iterations / warped boundary passes (max)")
    level: str = Field("final", description="feature level of the model to compress (not 'wave')")

    @field_validator("level")
    @classmethod
    def _feature(cls, v: str) -> str:
        if v == "wave":
            raise ValueError("FeCo compresses feature frames; choose a feature level (e.g. raw, delta, cmvn, final)")
        return v


class FeCo(Defense):
    """Feature Compression: k-means / warped k-means of the frames at a feature level (B, F, D) -> (B, k, D)."""

    name = "feco"
    Params = FeCoParams
    differentiable = True
    randomized = True  #: the class may be; an instance with a deterministic init sets this False
    acts_on = ("feature",)

    def __init__(self, params=None, **kwargs) -> None:
        super().__init__(params, **kwargs)
        p = self.params
        self.init_method = p.init if p.init != "auto" else ("random" if p.method == "kmeans" else "ts")
        self.randomized = self.init_method == "random"

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The constant compression matrix W (B, k, F) for features ``x`` (B, F, D), rows in temporal order."""
        p = self.params
        b, f, _ = x.shape
        k = n_clusters(f, p.ratio)
        with torch.no_grad():
            xd = x.detach()
            if k == f:
                assign = torch.arange(f, device=x.device).expand(b, f)
            elif p.method == "kmeans":
                if self.init_method == "random":
                    idx = torch.rand(b, f, generator=self.rng(x.device), device=x.device).argsort(dim=1)[:, :k]
                    init = xd.gather(1, idx.unsqueeze(-1).expand(b, k, xd.shape[2]))
                else:
                    wi = _one_hot_means(segments_to_assign(trace_segmentation(xd, k), f), k, xd.dtype)
                    init = wi @ _prepare(xd, p.distance)
                assign = kmeans_assign(xd, k, p.iters, p.distance, init)
            else:
                if self.init_method == "random":
                    bounds = random_cuts(b, f, k, self.rng(x.device), x.device)
                else:
                    bounds = trace_segmentation(xd, k)
                assign = segments_to_assign(warped_kmeans_bounds(xd, bounds, p.iters), f)
            return temporal_order(_one_hot_means(assign, k, x.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ParameterError(f"feco: expected features (B, frames, dims), got shape {tuple(x.shape)}")
        if x.shape[1] == 0:
            raise ParameterError("feco: the feature tensor has no frames")
        return self.weights(x) @ x
