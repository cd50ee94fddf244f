"""Feature Compression: k-means against references, warped k-means optimality, exactly k ordered rows, gradients,
seeding, and FeCo inside defended systems (TinyModel's raw level, GE2E's final level)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.cluster.vq import kmeans2

import sec4sr_core as sec4sr
from sec4sr_core.base.errors import ParameterError
from sec4sr_core.testing import TinyModel, check_defense, tiny_system
from sec4sr_plugins_defenses.feco import (FeCo, kmeans_assign, n_clusters, segments_to_assign, trace_segmentation,
                                          warped_kmeans_bounds)

from .helpers import speechlike

VARIANTS = [dict(), dict(distance="cos"), dict(init="ts"), dict(method="warped"),
            dict(method="warped", init="random")]


def blobs(b=3, f=40, d=4, k=5, seed=0):
    """Frames around k well-separated centres (so no cluster empties and Lloyd's answer is unambiguous)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(b, k, d, generator=g, dtype=torch.float64) * 10
    which = torch.randint(0, k, (b, f), generator=g)
    return centres.gather(1, which.unsqueeze(-1).expand(b, f, d)) + 0.3 * torch.randn(b, f, d, generator=g,
                                                                                      dtype=torch.float64)


def lloyd_reference(x: np.ndarray, init: np.ndarray, iters: int) -> np.ndarray:
    """Plain per-utterance Lloyd k-means (numpy loops); returns the labels."""
    cent = init.copy()
    for _ in range(iters + 1):
        labels = np.array([np.argmin([np.sum((p - c) ** 2) for c in cent]) for p in x])
        cent = np.array([x[labels == j].mean(axis=0) if np.any(labels == j) else cent[j] for j in range(len(cent))])
    return labels


@pytest.mark.parametrize("params", VARIANTS + [dict(level="raw", method="warped")], ids=str)
def test_contract(params):
    check_defense(FeCo, params)


def test_kmeans_matches_plain_and_scipy_reference():
    x = blobs()
    k, iters = 5, 10
    g = torch.Generator().manual_seed(3)
    idx = torch.rand(x.shape[0], x.shape[1], generator=g).argsort(dim=1)[:, :k]
    init = x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))
    ours = kmeans_assign(x, k, iters, "l2", init)
    for i in range(x.shape[0]):
        ref = lloyd_reference(x[i].numpy(), init[i].numpy(), iters)
        assert np.array_equal(ours[i].numpy(), ref)
        _, sp = kmeans2(x[i].numpy(), init[i].numpy(), iter=iters + 1, minit="matrix")
        assert np.array_equal(ours[i].numpy(), sp)


def fixed_iterations(x, k, iters, distance, init):
    """The batched Lloyd loop run for exactly ``iters`` iterations on every utterance (no early exit)."""
    from sec4sr_plugins_defenses.feco import _assign, _fill_empty, _one_hot_means, _prepare

    pts = _prepare(x, distance)
    assign, dist = _assign(pts, _prepare(init, distance), distance)
    for _ in range(iters):
        assign = _fill_empty(assign, dist, k)
        assign, dist = _assign(pts, _one_hot_means(assign, k, pts.dtype) @ pts, distance)
    return _fill_empty(assign, dist, k)


@pytest.mark.parametrize("distance", ["l2", "cos"])
def test_kmeans_early_exit_changes_nothing(distance):
    g = torch.Generator().manual_seed(4)
    x = torch.cat([blobs(b=3, f=60, k=6, seed=5).float(),  # converge in a few iterations
                   torch.randn(3, 60, 4, generator=g).round()])  # duplicates: empty clusters, slow or no convergence
    k = 20
    init = x.gather(1, torch.rand(6, 60, generator=g).argsort(1)[:, :k, None].expand(-1, -1, 4))
    for iters in (0, 1, 3, 20):
        assert torch.equal(kmeans_assign(x, k, iters, distance, init), fixed_iterations(x, k, iters, distance, init))


def test_fill_empty_keeps_every_singleton():
    from sec4sr_plugins_defenses.feco import _fill_empty

    # frame 0 is the only frame of cluster 0; clusters 2 and 3 are empty and must take frames of cluster 1
    assign = torch.tensor([[0, 1, 1, 1, 1, 1]])
    dist = torch.tensor([[9.0, 0.0, 1.0, 5.0, 3.0, 2.0]])
    out = _fill_empty(assign, dist, 4)
    assert torch.equal(out, torch.tensor([[0, 1, 1, 2, 3, 1]]))  # the two farthest movable frames, in id order


def test_kmeans_cos_reference():
    x = blobs(seed=1)
    k = 4
    init = x[:, :k].clone()
    ours = kmeans_assign(x, k, 8, "cos", init)
    xn = torch.nn.functional.normalize(x, dim=-1).numpy()
    for i in range(x.shape[0]):
        cent = xn[i, :k].copy()
        for _ in range(9):
            labels = np.argmax(xn[i] @ (cent / np.linalg.norm(cent, axis=1, keepdims=True)).T, axis=1)
            cent = np.array([xn[i][labels == j].mean(0) if np.any(labels == j) else cent[j] for j in range(k)])
        counts = np.bincount(labels, minlength=k)
        if (counts > 0).all():  # our empty-cluster repair only acts when a cluster empties
            assert np.array_equal(ours[i].numpy(), labels)


@settings(max_examples=30, deadline=None)
@given(b=st.integers(1, 3), f=st.integers(1, 60), d=st.integers(1, 5), ratio=st.floats(0.01, 1.0),
       which=st.integers(0, len(VARIANTS) - 1), seed=st.integers(0, 10_000), dup=st.booleans())
def test_exactly_k_ordered_rows(b, f, d, ratio, which, seed, dup):
    x = torch.randn(b, f, d, generator=torch.Generator().manual_seed(seed))
    if dup:  # many identical frames: clusters would empty without the repair
        x = x.round()
    fe = FeCo(ratio=ratio, **VARIANTS[which])
    fe.seed(seed)
    w = fe.weights(x)
    k = n_clusters(f, ratio)
    assert w.shape == (b, k, f)
    assert (w.sum(dim=2) - 1).abs().max() < 1e-5  # every row a mean of ≥ 1 frame: no empty cluster
    assert ((w > 0).sum(dim=1) == 1).all()  # every frame in exactly one cluster
    centre = w @ torch.arange(f, dtype=w.dtype)
    assert (centre[:, 1:] >= centre[:, :-1] - 1e-5).all()  # temporal order
    y = fe(x) if not fe.randomized else None
    if y is not None:
        assert torch.allclose(y, w @ x, atol=1e-5) and torch.isfinite(y).all()


def sse(x, assign, k):
    w = torch.nn.functional.one_hot(assign, k).double().transpose(1, 2)
    means = (w / w.sum(2, keepdim=True)) @ x.double()
    return ((x.double() - means.gather(1, assign.unsqueeze(-1).expand_as(x))) ** 2).sum((1, 2))


def test_warped_kmeans_is_a_local_optimum_better_than_its_start():
    x = torch.randn(3, 30, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64).cumsum(1)
    k, f = 6, 30
    start = trace_segmentation(x, k)
    bounds = warped_kmeans_bounds(x, start, 100)
    final = sse(x, segments_to_assign(bounds, f), k)
    assert (final <= sse(x, segments_to_assign(start, f), k) + 1e-9).all()
    # no single boundary move to any position between its neighbours lowers the error (checked by brute force)
    for i in range(x.shape[0]):
        for j in range(1, k):
            for pos in range(int(bounds[i, j - 1]) + 1, int(bounds[i, j + 1])):
                trial = bounds[i:i + 1].clone()
                trial[0, j] = pos
                assert sse(x[i:i + 1], segments_to_assign(trial, f), k)[0] >= final[i] - 1e-9


def test_warped_kmeans_finds_obvious_segments():
    levels = torch.tensor([0.0, 5.0, -3.0, 8.0], dtype=torch.float64)
    lengths = [7, 3, 12, 8]
    x = torch.cat([lv.repeat(n) for lv, n in zip(levels, lengths)]).view(1, -1, 1)
    x = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = FeCo(method="warped", ratio=4 / 30)(x)  # trace segmentation puts the cuts at the jumps
    assert torch.allclose(out[0, :, 0], levels, atol=0.02)


def test_trace_segmentation_boundaries_valid():
    x = torch.zeros(2, 10, 3)  # zero path length: every cut collapses and must be fixed up
    b = trace_segmentation(x, 4)
    assert b[:, 0].eq(0).all() and b[:, -1].eq(10).all() and (b[:, 1:] > b[:, :-1]).all()


def test_gradient_consistent_with_forward():
    x = torch.randn(2, 20, 3, dtype=torch.float64, requires_grad=True)
    for params in VARIANTS:
        fe = FeCo(**params)
        fe.seed(1)
        w = fe.weights(x)
        fe.seed(1)
        y = fe(x)
        gout = torch.randn_like(y)
        (grad,) = torch.autograd.grad(y, x, gout)
        assert torch.allclose(grad, w.transpose(1, 2) @ gout)  # the backward of exactly the forward's W @ x

        def fn(inp):
            fe.seed(1)
            return fe(inp)

        assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-6, fast_mode=True)


def test_seeded_randomness():
    x = torch.randn(2, 40, 5, generator=torch.Generator().manual_seed(0))
    for params in (dict(), dict(method="warped", init="random")):
        fe = FeCo(**params)
        assert fe.randomized
        fe.seed(1)
        a = fe(x)
        fe.seed(1)
        b = fe(x)
        fe.seed(2)
        c = fe(x)
        assert torch.equal(a, b) and not torch.equal(a, c)
    for params in (dict(init="ts"), dict(method="warped")):
        fe = FeCo(**params)
        assert not fe.randomized
        assert torch.equal(fe(x), fe(x))


@pytest.mark.parametrize("params,match", [({"level": "wave"}, "feature level"), ({"ratio": 0}, "ratio"),
                                          ({"ratio": 1.5}, "ratio"), ({"distance": "l1"}, "distance")])
def test_validation(params, match):
    with pytest.raises(ParameterError, match=match):
        FeCo(params)


def test_presets_resolve():
    reg = sec4sr.registry()
    for lv, level in {"o": "raw", "d": "delta", "c": "cmvn", "f": "final"}.items():
        for m, method in {"k": "kmeans", "wk": "warped"}.items():
            d = reg.build("defense", f"feco-{lv}-{m}")
            assert isinstance(d, FeCo) and d.level == level and d.params.method == method


def test_feco_in_a_defended_system_with_eot():
    from sec4sr_core.sdk.oracle import WhiteBoxOracle

    system = sec4sr.defend(tiny_system(seconds=0.5), "feco:level=raw")
    x = speechlike(2, 8000)
    oracle = WhiteBoxOracle(system, n=2, eot=4, seed=0)
    loss, grad, _, _ = oracle.loss_and_grad(
        x, lambda s, y: torch.nn.functional.cross_entropy(s, y, reduction="none"), torch.tensor([0, 1]))
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_feco_on_ge2e_final_level(ge2e_system, test_batch):
    x, y = test_batch
    x = x[:2, :, :16000]
    plain = ge2e_system(x)
    for spec in ("feco-f-k", "feco-f-wk"):
        ds = sec4sr.defend(ge2e_system, spec)
        ds.seed(0)
        xs = x.clone().requires_grad_(True)
        scores = ds(xs)
        assert scores.shape == plain.shape and torch.isfinite(scores).all()
        scores.sum().backward()
        assert xs.grad.abs().sum() > 0


def test_missing_level_refused(ge2e_system):
    with pytest.raises(ParameterError, match="raw"):
        sec4sr.defend(ge2e_system, "feco-o-k")


def test_on_device(device):
    x = torch.randn(3, 50, 8, device=device)
    for params in VARIANTS:
        fe = FeCo(**params)
        y = fe(x)
        assert y.shape == (3, 25, 8) and y.device == x.device
    if device != "cpu":  # deterministic variants agree across devices
        for params in (dict(init="ts"), dict(method="warped")):
            assert torch.allclose(FeCo(**params)(x).cpu(), FeCo(**params)(x.cpu()), atol=1e-4)
