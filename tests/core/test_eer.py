"""Sorting-based EER / minDCF against the previous O(N²) implementations (copied here verbatim as the reference),
and AS-Norm against an independent NumPy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sec4sr_core.base.errors import Sec4srError
from sec4sr_core.compose.enroll import as_norm, eer_threshold, min_dcf, sv_metrics


def old_eer_threshold(targets, nontargets):
    """The O(N²) implementation this module replaced (every candidate against every score)."""
    t = targets.detach().double().flatten().cpu()
    n = nontargets.detach().double().flatten().cpu()
    allv = torch.cat([t, n]).unique()
    cands = torch.cat([allv[:1] - 1.0, (allv[1:] + allv[:-1]) / 2, allv[-1:] + 1.0])
    frr = (t.unsqueeze(0) <= cands.unsqueeze(1)).double().mean(dim=1)
    far = (n.unsqueeze(0) > cands.unsqueeze(1)).double().mean(dim=1)
    i = int(torch.argmin((frr - far).abs()))
    return float(cands[i]), float((frr[i] + far[i]) / 2)


def old_min_dcf(targets, nontargets, p_target=0.01):
    t = targets.detach().double().flatten().cpu()
    n = nontargets.detach().double().flatten().cpu()
    allv = torch.cat([t, n]).unique()
    cands = torch.cat([allv[:1] - 1.0, allv])
    frr = (t.unsqueeze(0) <= cands.unsqueeze(1)).double().mean(dim=1)
    far = (n.unsqueeze(0) > cands.unsqueeze(1)).double().mean(dim=1)
    dcf = p_target * frr + (1 - p_target) * far
    return float(dcf.min() / min(p_target, 1 - p_target))


# scores on a coarse grid so that ties (within and across the two classes) are frequent
coarse = st.lists(st.integers(-6, 6).map(lambda v: v / 4), min_size=1, max_size=40)
fine = st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.tuples(coarse, coarse), st.tuples(fine, fine)))
def test_eer_and_min_dcf_equal_the_brute_force(tn):
    t, n = torch.tensor(tn[0], dtype=torch.float32), torch.tensor(tn[1], dtype=torch.float32)
    assert eer_threshold(t, n) == old_eer_threshold(t, n)
    for p in (0.01, 0.05, 0.5):
        assert min_dcf(t, n, p) == pytest.approx(old_min_dcf(t, n, p), abs=1e-12)


def test_random_scores_with_ties_match_at_scale():
    g = torch.Generator().manual_seed(3)
    t = torch.round(torch.randn(3000, generator=g) * 20 + 30) / 20  # rounded: many ties
    n = torch.round(torch.randn(9000, generator=g) * 20) / 20
    assert eer_threshold(t, n) == old_eer_threshold(t, n)
    assert min_dcf(t, n, 0.05) == pytest.approx(old_min_dcf(t, n, 0.05), abs=1e-12)
    m = sv_metrics(t, n)
    assert set(m) == {"eer", "threshold", "min_dcf_0.01", "min_dcf_0.05"} and 0 < m["eer"] < 0.5


def test_known_values_and_errors():
    # separable: EER 0, minDCF 0; reversed: EER 1
    assert eer_threshold(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2]))[1] == 0.0
    assert min_dcf(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2]), 0.05) == 0.0
    assert eer_threshold(torch.tensor([0.1, 0.2]), torch.tensor([0.8, 0.9]))[1] == 1.0
    # one target among 4 non-targets, overlapping: accepting everything costs FAR 1 -> minDCF capped at 1
    assert min_dcf(torch.tensor([0.0]), torch.tensor([0.5, 0.6, 0.7, 0.8]), 0.01) == 1.0
    for bad in ((torch.tensor([]), torch.tensor([0.1])), (torch.tensor([float("nan")]), torch.tensor([0.1]))):
        with pytest.raises(Sec4srError):
            eer_threshold(*bad)
    with pytest.raises(Sec4srError, match="prior"):
        min_dcf(torch.tensor([1.0]), torch.tensor([0.0]), 0.0)


def test_as_norm_matches_numpy_reference():
    rng = np.random.default_rng(0)
    s = rng.normal(size=50)
    ce, ct = rng.normal(size=(50, 30)), rng.normal(size=(50, 30)) + 0.3
    k = 7

    def side(c):
        top = -np.sort(-c, axis=1)[:, :k]
        return top.mean(1), top.std(1, ddof=1)

    (me, se), (mt, sdt) = side(ce), side(ct)
    want = 0.5 * ((s - me) / se + (s - mt) / sdt)
    got = as_norm(torch.tensor(s), torch.tensor(ce), torch.tensor(ct), top_k=k)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)
    # top_k above the cohort size uses the whole cohort
    np.testing.assert_allclose(as_norm(torch.tensor(s), torch.tensor(ce), torch.tensor(ct), top_k=999).numpy(),
                               0.5 * ((s - ce.mean(1)) / ce.std(1, ddof=1) + (s - ct.mean(1)) / ct.std(1, ddof=1)))
    with pytest.raises(Sec4srError):
        as_norm(torch.tensor(s), torch.tensor(ce[:, :1]), torch.tensor(ct[:, :1]))


def test_as_norm_reduces_per_utterance_score_offsets():
    """Each side of a trial carries a random score offset (a 'hard' or 'easy' utterance) that its cohort scores
    share; raw scores overlap, AS-Norm (the mean of Z- and T-norm) halves the offsets and separates them better."""
    g = torch.Generator().manual_seed(1)
    n_trials, cohort = 2000, 200
    label = torch.rand(n_trials, generator=g) < 0.2
    off_e, off_t = torch.randn(n_trials, generator=g) * 2, torch.randn(n_trials, generator=g) * 2
    raw = torch.where(label, 2.0, 0.0) + off_e + off_t + 0.3 * torch.randn(n_trials, generator=g)
    ce = off_e[:, None] + torch.randn(n_trials, cohort, generator=g) * 0.5
    ct = off_t[:, None] + torch.randn(n_trials, cohort, generator=g) * 0.5
    before = eer_threshold(raw[label], raw[~label])[1]
    normed = as_norm(raw, ce, ct, top_k=50)
    after = eer_threshold(normed[label], normed[~label])[1]
    assert before > 0.3 and after < before - 0.1


@settings(max_examples=40, deadline=None)
@given(st.floats(0.1, 10), st.floats(-5, 5), st.integers(2, 20))
def test_as_norm_is_invariant_to_a_common_affine_map(a, b, k):
    g = torch.Generator().manual_seed(k)
    s, ce, ct = torch.randn(16, generator=g).double(), torch.randn(16, 20, generator=g).double(), \
        torch.randn(16, 20, generator=g).double()
    torch.testing.assert_close(as_norm(a * s + b, a * ce + b, a * ct + b, k), as_norm(s, ce, ct, k))
