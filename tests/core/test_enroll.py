"""EER thresholds and min-DCF against brute-force references, trial lists for every task, and GE2E enrolled on the
embedded corpus reaching the accuracy the corpus was built for."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sec4sr_core.compose.enroll import eer_threshold, embed_utterances, load_or_enroll, min_dcf, task_trials
from sec4sr_core.base.errors import Sec4srError
from sec4sr_core.sdk.interfaces import REJECT, Task


def _rates(t, n, theta):
    """FRR and FAR of the strict rule ``accept iff score > θ`` (plain Python)."""
    frr = sum(1 for s in t if s <= theta) / len(t)
    far = sum(1 for s in n if s > theta) / len(n)
    return frr, far


def _all_thresholds(t, n):
    """Every distinct (FRR, FAR) operating point is reached by θ = -inf or θ = one of the scores."""
    return [-math.inf] + sorted(set(t) | set(n))


# scores on a coarse grid, so ties between targets and non-targets are common
grid = st.integers(-8, 8).map(lambda v: v / 4)


@settings(max_examples=80, deadline=None)
@given(st.lists(grid, min_size=1, max_size=15), st.lists(grid, min_size=1, max_size=15))
def test_eer_threshold_matches_brute_force(t, n):
    theta, eer = eer_threshold(torch.tensor(t), torch.tensor(n))
    best = min(abs(f - a) for f, a in (_rates(t, n, th) for th in _all_thresholds(t, n)))
    frr, far = _rates(t, n, theta)
    assert abs(abs(frr - far) - best) < 1e-12  # θ reaches the smallest |FRR − FAR|
    assert eer == pytest.approx((frr + far) / 2)  # and the EER reported is the one at θ
    assert 0.0 <= eer <= 1.0
    # θ never sits exactly on a score: a threshold between scores means the same on every platform
    assert theta not in set(t) | set(n)


@settings(max_examples=40, deadline=None)
@given(st.lists(grid, min_size=1, max_size=12), st.lists(grid, min_size=1, max_size=12),
       st.sampled_from([0.01, 0.05, 0.5]))
def test_min_dcf_matches_brute_force(t, n, p):
    ref = min(p * f + (1 - p) * a for f, a in (_rates(t, n, th) for th in _all_thresholds(t, n))) / min(p, 1 - p)
    got = min_dcf(torch.tensor(t), torch.tensor(n), p)
    assert got == pytest.approx(ref)
    assert 0.0 <= got <= 1.0 + 1e-12  # rejecting everything costs exactly 1


def test_eer_edge_cases():
    theta, eer = eer_threshold(torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0.1, 0.65]))
    assert eer == 0.0 and 0.65 <= theta < 0.7
    assert min_dcf(torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.2])) == 0.0
    _, eer = eer_threshold(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0]))
    assert eer == 0.5  # identical scores: no threshold separates anything
    _, eer = eer_threshold(torch.tensor([0.1, 0.2]), torch.tensor([0.8, 0.9]))
    assert eer == 1.0  # fully inverted scores: θ between them rejects every target and accepts every non-target
    with pytest.raises(Sec4srError, match="at least one"):
        eer_threshold(torch.tensor([]), torch.tensor([0.1]))


# ----------------------------------------------------------------------------------------------------------------------
# Trials
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def speakers(embedded):
    return embedded.enrolled_speakers()


def test_task_trials_csi_e(embedded, speakers):
    tr = task_trials("csi-e", embedded, speakers, seed=0)
    assert len(tr.utterances) == 112 and tr.claims is None
    assert {u.id for u in tr.utterances} == {u.id for u in embedded.split("test")}
    assert [speakers[i] for i in tr.labels.tolist()] == [u.speaker for u in tr.utterances]


def test_task_trials_csi_ne(embedded, speakers):
    tr = task_trials("csi-ne", embedded, speakers, seed=0)
    heldout = [u for u in embedded.split("heldout") if u.speaker in speakers]
    assert len(tr.utterances) == len(heldout) == 48 and tr.claims is None
    assert [speakers[i] for i in tr.labels.tolist()] == [u.speaker for u in tr.utterances]


def test_task_trials_sv(embedded, speakers):
    tr = task_trials("sv", embedded, speakers, seed=0)
    assert len(tr.utterances) == 112 + 56
    genuine = tr.labels == 0
    assert int(genuine.sum()) == 112 and int((tr.labels == REJECT).sum()) == 56
    assert set(tr.labels.tolist()) == {0, REJECT}
    for u, lab, claim in zip(tr.utterances, tr.labels.tolist(), tr.claims.tolist()):
        assert 0 <= claim < len(speakers)
        if lab == 0:
            assert speakers[claim] == u.speaker  # a genuine trial claims its own speaker
        else:
            assert u.speaker not in speakers  # an imposter claims an enrolled speaker it is not
    # imposter claims are spread over the enrolled speakers (seeded random)
    assert len(set(tr.claims[~genuine].tolist())) > 5


def test_task_trials_osi(embedded, speakers):
    tr = task_trials("osi", embedded, speakers, seed=0)
    assert len(tr.utterances) == 168 and tr.claims is None
    for u, lab in zip(tr.utterances, tr.labels.tolist()):
        assert (lab == REJECT) == (u.speaker not in speakers)
        if lab != REJECT:
            assert speakers[lab] == u.speaker


def test_task_trials_are_seeded_and_limited(embedded, speakers):
    a = task_trials("osi", embedded, speakers, seed=3, limit=10)
    b = task_trials("osi", embedded, speakers, seed=3, limit=10)
    c = task_trials("osi", embedded, speakers, seed=4, limit=10)
    full = task_trials("osi", embedded, speakers, seed=3)
    assert [u.id for u in a.utterances] == [u.id for u in b.utterances] == [u.id for u in full.utterances[:10]]
    assert [u.id for u in a.utterances] != [u.id for u in c.utterances]
    assert torch.equal(a.labels, full.labels[:10])
    with pytest.raises(Sec4srError, match="no trials"):
        task_trials("csi-e", embedded, ["nobody"])


# ----------------------------------------------------------------------------------------------------------------------
# GE2E enrolled on the embedded corpus
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def test_scores(ge2e_system, embedded):
    """Scores of a fixed subset of the test split (3 utterances per enrolled speaker, 3 per imposter) — the full
    split costs ~40 s of CPU, and the subset already resolves 95 % accuracy and 3 % EER."""
    def first(split, k):
        seen: dict[str, int] = {}
        out = []
        for u in split:
            if seen.get(u.speaker, 0) < k:
                out.append(u)
                seen[u.speaker] = seen.get(u.speaker, 0) + 1
        return out

    genuine = first(embedded.split("test"), 3)
    imposters = first(embedded.split("imposter-test"), 3)
    model = ge2e_system.model
    emb = embed_utterances(model, genuine + imposters)
    scores = model.score(emb, ge2e_system.enrolled)
    index = {s: i for i, s in enumerate(ge2e_system.speakers)}
    labels = torch.tensor([index[u.speaker] for u in genuine])
    return scores[: len(genuine)], scores[len(genuine):], labels


def test_ge2e_csi_accuracy_on_test_split(test_scores):
    genuine, _, labels = test_scores
    assert genuine.shape == (48, 16)
    accuracy = float((genuine.argmax(dim=1) == labels).double().mean())
    assert accuracy >= 0.95, accuracy


def test_ge2e_sv_eer_on_test_split(test_scores):
    genuine, imposters, labels = test_scores
    true = genuine.gather(1, labels.view(-1, 1)).squeeze(1)
    others = genuine[~torch.nn.functional.one_hot(labels, 16).bool()]
    _, eer = eer_threshold(true, torch.cat([others, imposters.flatten()]))
    assert eer <= 0.03, eer


def test_stored_thresholds_generalise_to_the_test_split(ge2e_system, embedded, test_scores):
    """The thresholds chosen on dev/imposter-dev (stored in the model store) work on unseen test trials."""
    e = load_or_enroll(ge2e_system.model, embedded)
    assert set(e.thresholds) == {"sv", "osi"} and e.eer["sv"] <= 0.05 and e.stats["dev_csi_accuracy"] >= 0.95
    genuine, imposters, labels = test_scores
    true = genuine.gather(1, labels.view(-1, 1)).squeeze(1)
    assert float((true <= e.thresholds["sv"]).double().mean()) <= 0.1  # false rejections
    assert float((imposters > e.thresholds["sv"]).double().mean()) <= 0.1  # false acceptances
    assert float((imposters.max(dim=1).values > e.thresholds["osi"]).double().mean()) <= 0.1
    # the enrolled system for SV carries its threshold
    import sec4sr_core

    sv = sec4sr_core.load_system("ge2e", task="sv")
    assert sv.task == Task.SV and sv.threshold == e.thresholds["sv"]
    assert torch.allclose(sv.enrolled, ge2e_system.enrolled)
