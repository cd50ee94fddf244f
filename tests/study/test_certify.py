"""Certification by randomized smoothing (``sec4sr_core.study.certify``, ``sec4sr certify``): Clopper–Pearson bounds
against an independent root-finding computation, the certificate of a linear classifier against its exact distance
to the decision boundary, abstention under huge noise, seed determinism, the vote rule, and the command end to end
(table, files, resume, one-line errors)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.stats import binom, norm

from sec4sr_core.cli import main
from sec4sr_core.compose.factories import build_defenses
from sec4sr_core.sdk import SpeakerModel, Task
from sec4sr_core.sdk.system import SpeakerSystem
from sec4sr_core.testing import TinyModel, tiny_system
from sec4sr_core.study.certify import (
    SmoothedSystem, TrialRecord, certified_accuracy, certify, clopper_pearson, lower_confidence_bound, max_radius,
    radius_of, split_smoothing,
)


# ---------------------------------------------------------------------------------------------------------------
# Clopper–Pearson against root finding on the binomial tail
# ---------------------------------------------------------------------------------------------------------------


def _lower_by_root(k: int, n: int, alpha: float) -> float:
    """The p at which P[Bin(n, p) >= k] = alpha (the exact lower bound), by root finding on the binomial tail."""
    if k == 0:
        return 0.0
    return brentq(lambda p: binom.sf(k - 1, n, p) - alpha, 1e-15, 1 - 1e-15, xtol=1e-14)


def _upper_by_root(k: int, n: int, alpha: float) -> float:
    if k == n:
        return 1.0
    return brentq(lambda p: binom.cdf(k, n, p) - alpha, 1e-15, 1 - 1e-15, xtol=1e-14)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5000), frac=st.floats(0, 1), alpha=st.sampled_from([0.001, 0.01, 0.05, 0.2]))
def test_clopper_pearson_matches_the_binomial_tail(n, frac, alpha):
    k = int(round(frac * n))
    assert lower_confidence_bound(k, n, alpha) == pytest.approx(_lower_by_root(k, n, alpha), abs=1e-9)
    lo, hi = clopper_pearson(k, n, 1 - 2 * alpha)
    assert lo == pytest.approx(_lower_by_root(k, n, alpha), abs=1e-9)
    assert hi == pytest.approx(_upper_by_root(k, n, alpha), abs=1e-9)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_known_values_and_radius():
    # all 100 votes: the bound is alpha^(1/n)
    assert lower_confidence_bound(100, 100, 0.001) == pytest.approx(0.001 ** 0.01, rel=1e-12)
    assert max_radius(0.25, 100, 0.001) == pytest.approx(0.25 * norm.ppf(0.001 ** 0.01))
    assert radius_of(norm.cdf(2.0), 0.1) == pytest.approx(0.2)
    assert radius_of(0.5, 0.1) == 0.0 and radius_of(0.3, 0.1) == 0.0
    for bad in [(5, 4, 0.1), (-1, 4, 0.1), (1, 0, 0.1), (1, 4, 0.0), (1, 4, 1.0)]:
        with pytest.raises(Exception, match="need|alpha"):
            lower_confidence_bound(*bad)


def test_certified_accuracy_counts_radius_correctness_and_abstention():
    def rec(i, correct, abstained, radius, norm_=1.0):
        snr = None if abstained else 20 * math.log10(norm_ / radius)
        return TrialRecord(i, f"u{i}", "s", 0, None, 0, abstained, correct, 90, 100, 0.9, radius, norm_, snr, 0.1)

    records = [rec(0, True, False, 0.02), rec(1, True, False, 0.01), rec(2, False, False, 0.05),
               rec(3, False, True, 0.0)]
    rows = certified_accuracy(records, [0.0, 0.01, 0.015, 0.03])
    assert [r["certified"] for r in rows] == [2, 2, 1, 0]
    assert all(r["abstained"] == 1 and r["trials"] == 4 for r in rows)
    assert rows[1]["snr_db"] == pytest.approx(40.0) and math.isinf(rows[0]["snr_db"])
    assert (rows[2]["lo"], rows[2]["hi"]) == pytest.approx(clopper_pearson(1, 4))


# ---------------------------------------------------------------------------------------------------------------
# A linear classifier, whose smoothed certificate is known exactly
# ---------------------------------------------------------------------------------------------------------------


class FirstSamples(SpeakerModel):
    """Logits = the first ``classes`` samples of the wave: a linear classifier whose smoothed top-class
    probability and certified radius have closed forms (for 2 classes, the radius is the distance to x0 = x1)."""

    name = "test-first-samples"
    stages = (("final", "frames"),)
    output = "logits"
    tasks = (Task.CSI_E,)

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.classes = classes
        self.class_ids = [f"c{i}" for i in range(classes)]

    def frames(self, x):
        return x.reshape(x.shape[0], 1, -1)

    def head(self, final):
        return final[:, 0, : self.classes]


def _smoothed(classes: int, spec: str) -> SmoothedSystem:
    model = FirstSamples(classes).eval()
    smooth, rest = split_smoothing(build_defenses(spec))
    return SmoothedSystem(SpeakerSystem(model, "csi-e", model.class_ids), smooth, rest)


def test_linear_certificate_is_sound_and_nearly_tight():
    sigma = 0.05
    smoothed = _smoothed(2, f"smooth:sigma={sigma},n=20000,batch=20000")
    gaps = torch.tensor([0.02, 0.05, 0.1, 0.2, -0.08])
    x = torch.zeros(len(gaps), 1, 16)
    x[:, 0, 0] = 0.3 + gaps / 2
    x[:, 0, 1] = 0.3 - gaps / 2
    certs = certify(smoothed, x, None, n0=100, n=20000, alpha=0.001, seeds=list(range(len(gaps))))
    for gap, c in zip(gaps.tolist(), certs):
        distance = abs(gap) / math.sqrt(2)  # L2 distance from x to the boundary x0 = x1
        assert c.prediction == (0 if gap > 0 else 1) and not c.abstained
        # exact: p_A = Φ(|gap| / (σ√2)), so σ·Φ⁻¹(p_A) is the distance; the lower bound makes R a little smaller
        assert c.radius <= distance
        if abs(gap) <= 0.1:  # p_A <= 0.92: 20000 votes pin Φ⁻¹(p_A) within ~0.1
            assert c.radius >= distance - 0.12 * sigma


def test_huge_noise_abstains():
    smoothed = _smoothed(4, "smooth:sigma=1.0,n=200")
    x = torch.zeros(3, 1, 16)
    x[:, 0, 0] = 0.1
    certs = certify(smoothed, x, None, n0=20, n=200, alpha=0.001, seeds=[1, 2, 3])
    assert all(c.abstained and c.radius == 0.0 and c.p_lower <= 0.5 for c in certs)


def test_seeded_certificates_do_not_depend_on_the_batch():
    smoothed = _smoothed(4, "smooth:sigma=0.05,n=300,batch=64")
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(5, 1, 16, generator=g)
    a = certify(smoothed, x, None, 10, 300, 0.01, seeds=[11, 12, 13, 14, 15])
    b = certify(smoothed, x, None, 10, 300, 0.01, seeds=[11, 12, 13, 14, 15])
    c = certify(smoothed, x[3:4], None, 10, 300, 0.01, seeds=[14])
    assert a == b and a[3] == c[0]
    d = certify(smoothed, x, None, 10, 300, 0.01, seeds=[21, 22, 23, 24, 25])
    assert [r.count for r in d] != [r.count for r in a]


_SMOOTHED: dict[str, SmoothedSystem] = {}


@settings(max_examples=100, deadline=None)
@given(task=st.sampled_from(["csi-e", "sv", "osi"]), data=st.data())
def test_vote_scores_decide_the_plurality(task, data):
    if task not in _SMOOTHED:
        _SMOOTHED[task] = SmoothedSystem(tiny_system(task, n_speakers=3), build_defenses("smooth")[0])
    smoothed = _SMOOTHED[task]
    cols = smoothed.n_classes
    counts = torch.tensor(data.draw(st.lists(st.lists(st.integers(0, 6), min_size=cols, max_size=cols),
                                             min_size=1, max_size=5)))
    counts[counts.sum(1) == 0, 0] = 1
    if task == "csi-e":  # no reject votes in closed-set identification
        counts[:, 0] = 0
        counts[counts.sum(1) == 0, 1] = 1
    decided = smoothed.decide(smoothed.vote_scores(counts))
    assert torch.equal(decided, smoothed.decision_of(counts.argmax(dim=1)))


# ---------------------------------------------------------------------------------------------------------------
# sec4sr certify end to end
# ---------------------------------------------------------------------------------------------------------------

QUICK = ["--model", "tiny", "--n", "6", "--n0", "2", "--alpha", "0.05", "--length", "0.5", "--batch", "16",
         "--quiet"]


@pytest.fixture(autouse=True, scope="module")
def tiny_plugin():
    """The contract kit's TinyModel registered as the backbone ``tiny`` (fast enough to enroll the embedded
    corpus in a test)."""
    from sec4sr_core import hookimpl
    from sec4sr_core.plugins.manager import register_plugin, unregister_plugin

    class Plugin:
        @hookimpl
        def register_models(self, register):
            register(TinyModel)

    register_plugin(Plugin(), name="certify-test-tiny")
    yield
    unregister_plugin("certify-test-tiny")


def test_certify_command_prints_stores_and_resumes(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["certify", "--task", "osi", "--sigma", "0.002", "--out", str(out), *QUICK]
    assert main([*args, "--limit", "2", "--radius", "0", "--radius", "0.001"]) == 0
    text = capsys.readouterr().out
    assert "certified acc." in text and "CP interval" in text and "abstained" in text
    assert "2 trials certified" in text
    for name in ("certify.md", "certify.png", "certify.html", "results.sqlite"):
        assert (out / name).stat().st_size > 0
    assert (out / "certify.png").read_bytes()[:4] == b"\x89PNG"
    assert '<section id="certify">' in (out / "certify.html").read_text()
    assert main([*args, "--limit", "3", "--radius", "0", "--radius", "0.001", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["trials"] == 3 and doc["computed"] == 1  # two read back from the store
    assert [r["radius"] for r in doc["table"]] == [0.0, 0.001] and doc["table"][0]["snr_db"] is None
    assert doc["table"][1]["snr_db"] > 40  # 0.001 L2 on 0.5 s of speech is a faint perturbation
    assert doc["config"]["sigma"] == 0.002 and doc["config"]["task"] == "osi"
    # `sec4sr report` renders the certification of the folder too
    assert main(["report", str(out), "--format", "md", "-o", str(tmp_path / "r.md")]) == 0
    assert "Certified accuracy" in (tmp_path / "r.md").read_text()
    assert main(["report", str(out), "--format", "html", "-o", str(tmp_path / "r.html")]) == 0
    assert '<section id="certify">' in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize("bad", [["--sigma", "0"], ["--alpha", "0.7"], ["--n", "0"], ["--radius", "-1"],
                                 ["--defense", "nosuch"], ["--limit", "0"]])
def test_certify_bad_input_is_one_error_line(tmp_path, capsys, bad):
    rc = main(["certify", "--out", str(tmp_path / "o"), *QUICK, *bad])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_report_section_is_empty_without_a_certification_run(tmp_path):
    import sqlite3

    from sec4sr_core.report import certify as report

    assert report.load(tmp_path) is None and report.html_fragment(None) == ""
    sqlite3.connect(str(tmp_path / "results.sqlite")).execute("CREATE TABLE results (x)").connection.commit()
    assert report.load(tmp_path) is None  # a study's store without certification tables, left unchanged
    tables = {r[0] for r in sqlite3.connect(str(tmp_path / "results.sqlite")).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"results"}
