"""Certified robustness by randomized smoothing (Cohen, Rosenfeld & Kolter 2019, Algorithm CERTIFY; for speaker
recognition Korzh et al., AAAI 2025, arXiv 2404.18791).

The smoothed system :class:`SmoothedSystem` predicts the decision the base system (the rest of the defense chain in
front of the enrolled system) takes most often on Gaussian copies ``x + δ``, ``δ ~ N(0, σ² I)`` drawn by a
*smoothing defense* (a wave-level defense with ``smoothing = True`` and a ``smoothing_sigma``, e.g. ``smooth``).
Votes are on decisions, the reject class ``-1`` of SV/OSI included: vote column 0 is reject, column ``k + 1`` is
class ``k`` (SV: column 1 is accept).

CERTIFY per trial: ``n0`` selection draws give the top decision ``ĉ``; ``n`` further draws count its votes
``k``; ``p̲ = Beta⁻¹(α; k, n - k + 1)`` is the one-sided Clopper–Pearson lower bound (level ``1 - α``). If
``p̲ ≤ 1/2`` the trial abstains, else the certified L2 radius is ``R = σ·Φ⁻¹(p̲)`` (amplitude units, the
waveform's L2 norm over all T samples): with probability ``≥ 1 - α`` no perturbation ``‖δ‖₂ < R`` changes the
smoothed prediction. ``R`` as an SNR is ``20·log10(‖x‖₂ / R)`` dB per utterance.

Certified accuracy at radius ``r``: the fraction of trials predicted correctly, not abstained, with ``R ≥ r``
(two-sided Clopper–Pearson interval over trials). Results go to a table ``certify`` of ``<out>/results.sqlite``
keyed by a run identity and the trial index, so an interrupted or extended (``--limit``) run resumes; every trial
draws its noise from a generator seeded by (seed, utterance, stage), so the numbers do not depend on batching or
on resuming.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from sec4sr_core.base.errors import ParameterError, Sec4srError
from sec4sr_core.compose.targets import batch_seed
from sec4sr_core.sdk.interfaces import REJECT, Defense, Task
from sec4sr_core.sdk.system import DefendedSystem, SpeakerSystem
from sec4sr_core.study.rows import digest

#: noisy copies (per utterance) whose mean scores give the smoothed system's gradient (straight-through)
GRAD_COPIES = 8


# --------------------------------------------------------------------------------------------------------------------
# Clopper–Pearson
# --------------------------------------------------------------------------------------------------------------------


def lower_confidence_bound(k: int, n: int, alpha: float) -> float:
    """One-sided Clopper–Pearson lower bound of a binomial proportion at level ``1 - alpha``:
    ``Beta⁻¹(alpha; k, n - k + 1)``, 0 when ``k = 0``."""
    from scipy.stats import beta

    _check_counts(k, n)
    if not 0.0 < alpha < 1.0:
        raise ParameterError(f"alpha must be in (0, 1), got {alpha}")
    return 0.0 if k == 0 else float(beta.ppf(alpha, k, n - k + 1))


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper–Pearson interval (lo, hi) of ``k / n`` at ``confidence``; exactly 0 / 1 at the ends."""
    from scipy.stats import beta

    _check_counts(k, n)
    a = 1.0 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def _check_counts(k: int, n: int) -> None:
    if n <= 0 or not 0 <= k <= n:
        raise ParameterError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")


def radius_of(p_lower: float, sigma: float) -> float:
    """The certified L2 radius ``σ·Φ⁻¹(p̲)``; 0 when ``p̲ ≤ 1/2`` (abstain)."""
    from scipy.stats import norm

    return float(sigma * norm.ppf(p_lower)) if p_lower > 0.5 else 0.0


def max_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest radius ``n`` draws can certify (all votes for one class): ``σ·Φ⁻¹(α^(1/n))``."""
    return radius_of(alpha ** (1.0 / n), sigma)


def snr_db(norm: float, radius: float) -> float:
    """A perturbation of L2 norm ``radius`` on a signal of L2 norm ``norm`` as an SNR in dB (inf for radius 0)."""
    return math.inf if radius <= 0 else 20.0 * math.log10(norm / radius)


# --------------------------------------------------------------------------------------------------------------------
# The smoothed system
# --------------------------------------------------------------------------------------------------------------------


def split_smoothing(defenses: Sequence[Defense]) -> tuple[Defense | None, list[Defense]]:
    """``(smoothing defense, the rest)`` of a chain; ``(None, chain)`` without one; more than one is an error."""
    smooth = [d for d in defenses if getattr(d, "smoothing", False)]
    if len(smooth) > 1:
        raise ParameterError(f"a defense chain holds at most one smoothing defense, got "
                             f"{', '.join(d.name for d in smooth)}")
    if not smooth:
        return None, list(defenses)
    if smooth[0].level != "wave":
        raise ParameterError(f"smoothing defense {smooth[0].name!r} must act on the wave level, not {smooth[0].level!r}")
    return smooth[0], [d for d in defenses if d is not smooth[0]]


def defended_or_smoothed(system: SpeakerSystem, defenses: Sequence[Defense], order: str = "sequential",
                         ) -> DefendedSystem:
    """The system behind ``defenses``: a :class:`SmoothedSystem` when the chain holds a smoothing defense (the rest
    of the chain is its base system), else a plain :class:`DefendedSystem`."""
    smooth, rest = split_smoothing(defenses)
    if smooth is None:
        return DefendedSystem(system, rest, order)
    return SmoothedSystem(system, smooth, rest, order)


class SmoothedSystem(DefendedSystem):
    """The smoothed classifier over a base system (``system`` behind ``rest``), as a :class:`DefendedSystem`.

    ``forward(x, claims)`` returns *vote scores* (B, S) whose ordinary decision rule gives the majority decision
    over ``smooth.smoothing_n`` noisy copies: CSI the vote fractions; SV/OSI ``θ + f_k - f_reject`` (strict ``>``:
    a tie with reject rejects). With gradients enabled the value is unchanged and the gradient is that of the mean
    base scores over :data:`GRAD_COPIES` noisy copies (straight-through), the EOT gradient of the smoothed system.
    """

    def __init__(self, system: SpeakerSystem, smooth: Defense, rest: Sequence[Defense] = (),
                 order: str = "sequential") -> None:
        if not getattr(smooth, "smoothing", False):
            raise ParameterError(f"defense {smooth.name!r} is not a smoothing defense")
        super().__init__(system, [smooth, *rest], order)
        self.smooth = smooth
        object.__setattr__(self, "base", DefendedSystem(system, list(rest), order))  # shares modules, unregistered

    @property
    def randomized(self) -> bool:
        return True

    @property
    def n_classes(self) -> int:
        """Vote columns: reject, then one per score column."""
        return self.system.n_scores + 1

    def label(self) -> str:
        return "+".join([self.smooth.label(), *([self.base.label()] if len(self.base.defenses) else [])])

    def column_of(self, decisions: torch.Tensor) -> torch.Tensor:
        """Vote columns of decisions (B,): reject -> 0, class k -> k + 1."""
        return torch.where(decisions == REJECT, 0, decisions + 1)

    def decision_of(self, columns: torch.Tensor) -> torch.Tensor:
        return torch.where(columns == 0, REJECT, columns - 1).to(torch.int64)

    @torch.no_grad()
    def vote_counts(self, x: torch.Tensor, claims: torch.Tensor | None = None, n: int | None = None,
                    seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Votes (B, n_classes) int64 of the base system's decisions on ``n`` noisy copies of each row of ``x``
        (B, 1, T), in forward passes of at most ``smooth.smoothing_batch`` rows. ``seeds``: one per row, reseeding
        the noise before that row's copies (results independent of the batch); else the defense's own stream."""
        n = int(n or self.smooth.smoothing_n)
        if n < 1:
            raise ParameterError(f"need at least one noisy copy, got n={n}")
        if seeds is not None and len(seeds) != x.shape[0]:
            raise ParameterError(f"need one seed per row: {x.shape[0]} rows, {len(seeds)} seeds")
        chunk = max(1, int(self.smooth.smoothing_batch))
        counts = torch.zeros(x.shape[0], self.n_classes, dtype=torch.int64, device=x.device)
        pending: list[tuple[int, torch.Tensor]] = []
        rows = 0

        def flush() -> None:
            nonlocal pending, rows
            if not pending:
                return
            owners = torch.cat([torch.full((p.shape[0],), b, dtype=torch.int64, device=x.device) for b, p in pending])
            xs = torch.cat([p for _, p in pending])
            rep = None if claims is None else claims.to(x.device)[owners]
            cols = self.column_of(self.base.decide(self.base(xs, rep)))
            counts.index_put_((owners, cols), torch.ones_like(cols), accumulate=True)
            pending, rows = [], 0

        for b in range(x.shape[0]):
            if seeds is not None:
                self.smooth.seed(int(seeds[b]), x.device)
            left = n
            while left:
                m = min(chunk, left)
                if rows + m > chunk:
                    flush()
                pending.append((b, self.smooth(x[b : b + 1].expand(m, *x.shape[1:]))))
                rows += m
                left -= m
        flush()
        return counts

    def vote_scores(self, counts: torch.Tensor) -> torch.Tensor:
        """Scores (B, S) whose decision rule gives the plurality of ``counts`` (B, n_classes)."""
        frac = counts.double() / counts.sum(dim=1, keepdim=True).clamp_min(1)
        if self.task.has_threshold:
            th = float(self.threshold)  # type: ignore[arg-type]
            return (th + frac[:, 1:] - frac[:, :1]).to(torch.float32)
        return frac[:, 1:].to(torch.float32)

    def forward(self, x: torch.Tensor, claims: torch.Tensor | None = None) -> torch.Tensor:
        scores = self.vote_scores(self.vote_counts(x.detach(), claims))
        if not (torch.is_grad_enabled() and x.requires_grad):
            return scores
        m = min(GRAD_COPIES, self.smooth.smoothing_n)
        rep = x.repeat_interleave(m, dim=0)
        c = None if claims is None else claims.to(x.device).repeat_interleave(m)
        base = self.base(self.smooth(rep), c).view(x.shape[0], m, -1).mean(dim=1)
        return scores + (base - base.detach())

    @torch.no_grad()
    def predict(self, x: torch.Tensor, claims: torch.Tensor | None = None, n: int | None = None) -> torch.Tensor:
        """The majority decisions (B,) over ``n`` noisy copies (ties: the lower vote column, reject first)."""
        return self.decision_of(self.vote_counts(x, claims, n).argmax(dim=1))


# --------------------------------------------------------------------------------------------------------------------
# CERTIFY
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Certificate:
    """The outcome of CERTIFY for one trial. ``prediction`` is the selected decision (−1 = reject) even when the
    trial abstains; ``radius`` (L2, amplitude units) is 0 then."""

    prediction: int
    abstained: bool
    count: int
    n: int
    p_lower: float
    radius: float


def certify(smoothed: SmoothedSystem, x: torch.Tensor, claims: torch.Tensor | None, n0: int, n: int,
            alpha: float, seeds: Sequence[int] | None = None) -> list[Certificate]:
    """Cohen et al.'s CERTIFY for every row of ``x`` (B, 1, T): select with ``n0`` draws, estimate with ``n``
    fresh draws, bound with :func:`lower_confidence_bound`. ``seeds`` (one per row) seed the selection draws;
    the estimation draws use ``seed + 1``, so the two samples are independent, as the algorithm requires."""
    sigma = getattr(smoothed.smooth, "smoothing_sigma", None)
    if sigma is None:
        raise ParameterError(f"defense {smoothed.smooth.label()!r} sets its noise by SNR: an L2 certificate needs "
                             f"a fixed sigma")
    if n0 < 1 or n < 1:
        raise ParameterError(f"n0 and n must be at least 1, got n0={n0}, n={n}")
    seeds = list(seeds) if seeds is not None else [batch_seed("certify", i) for i in range(x.shape[0])]
    c0 = smoothed.vote_counts(x, claims, n0, seeds)
    top = c0.argmax(dim=1)
    c = smoothed.vote_counts(x, claims, n, [(s + 1) % (2**63) for s in seeds])
    k = c.gather(1, top.view(-1, 1)).squeeze(1)
    out = []
    for b in range(x.shape[0]):
        p = lower_confidence_bound(int(k[b]), n, alpha)
        out.append(Certificate(int(smoothed.decision_of(top[b])), p <= 0.5, int(k[b]), n, p, radius_of(p, sigma)))
    return out


# --------------------------------------------------------------------------------------------------------------------
# Certified accuracy
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class TrialRecord:
    """One certified trial as stored: ``norm`` is ‖x‖₂ (amplitude units over T samples), ``snr_db`` the certified
    radius as an SNR (None when abstained)."""

    trial: int
    utterance: str
    speaker: str
    label: int
    claim: int | None
    prediction: int
    abstained: bool
    correct: bool
    count: int
    n: int
    p_lower: float
    radius: float
    norm: float
    snr_db: float | None
    seconds: float


def certified_accuracy(records: Sequence[TrialRecord], radii: Sequence[float], confidence: float = 0.95,
                       ) -> list[dict[str, Any]]:
    """One row per radius r (L2): certified accuracy (correct, not abstained, ``R ≥ r``) over all trials with its
    Clopper–Pearson interval, the count of abstentions, and r as the median SNR in dB over the trials."""
    total = len(records)
    if total == 0:
        raise Sec4srError("no certified trials to summarise")
    abstained = sum(r.abstained for r in records)
    norms = sorted(r.norm for r in records)
    out = []
    for radius in radii:
        k = sum(1 for r in records if r.correct and not r.abstained and r.radius >= radius)
        lo, hi = clopper_pearson(k, total, confidence)
        snrs = [snr_db(v, radius) for v in norms]
        out.append({"radius": float(radius), "snr_db": _median(snrs), "certified": k, "trials": total,
                    "accuracy": k / total, "lo": lo, "hi": hi, "abstained": abstained})
    return out


def accuracy_at_snr(records: Sequence[TrialRecord], snrs_db: Sequence[float]) -> list[float]:
    """Certified accuracy at each SNR s (dB): correct, not abstained, and certified SNR ``≤ s`` (radius at least
    ``‖x‖₂·10^(-s/20)`` for that utterance)."""
    total = len(records)
    return [sum(1 for r in records if r.correct and not r.abstained and r.snr_db is not None and r.snr_db <= s)
            / total for s in snrs_db]


def _median(values: Sequence[float]) -> float | None:
    v = sorted(values)
    if not v:
        return None
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def default_radii(sigma: float, n: int, alpha: float) -> list[float]:
    """0 and a quarter, half and three quarters of the largest radius ``n`` draws can certify (2 significant
    digits)."""
    top = max_radius(sigma, n, alpha)
    return [0.0] + [float(f"{f * top:.2g}") for f in (0.25, 0.5, 0.75) if top > 0]


# --------------------------------------------------------------------------------------------------------------------
# Stored, resumable certification runs
# --------------------------------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS certify_runs (run TEXT PRIMARY KEY, config TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS certify (
    run TEXT NOT NULL, trial INTEGER NOT NULL, utterance TEXT NOT NULL, speaker TEXT NOT NULL, label INTEGER NOT NULL,
    claim INTEGER, prediction INTEGER NOT NULL, abstained INTEGER NOT NULL, correct INTEGER NOT NULL,
    count INTEGER NOT NULL, n INTEGER NOT NULL, p_lower REAL NOT NULL, radius REAL NOT NULL, norm REAL NOT NULL,
    snr_db REAL, seconds REAL NOT NULL, PRIMARY KEY (run, trial)
);
"""

_COLUMNS = [f.name for f in TrialRecord.__dataclass_fields__.values()]  # type: ignore[attr-defined]


def _connect(out: Path) -> sqlite3.Connection:
    try:
        out.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(out / "results.sqlite"), timeout=60)
        conn.executescript(_SCHEMA)
    except (OSError, sqlite3.Error) as exc:
        raise Sec4srError(f"cannot store certification results in {out}: {exc}") from None
    return conn


def stored_records(out: str | Path, run: str | None = None) -> tuple[dict[str, Any] | None, list[TrialRecord]]:
    """The config and trial records of certification run ``run`` (default: the latest) stored in ``out``."""
    path = Path(out) / "results.sqlite"
    if not path.exists():
        raise Sec4srError(f"no results.sqlite in {out}")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise Sec4srError(f"cannot read {path}: {exc}") from None
    if not {"certify", "certify_runs"} <= tables:
        conn.close()
        return None, []
    try:
        if run is None:
            row = conn.execute("SELECT run FROM certify_runs ORDER BY created DESC LIMIT 1").fetchone()
            if row is None:
                return None, []
            run = row[0]
        cfg = conn.execute("SELECT config FROM certify_runs WHERE run = ?", (run,)).fetchone()
        rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM certify WHERE run = ? ORDER BY trial",
                            (run,)).fetchall()
    finally:
        conn.close()
    records = [TrialRecord(**dict(zip(_COLUMNS, r))) for r in rows]
    for r in records:
        r.abstained, r.correct = bool(r.abstained), bool(r.correct)
    return (json.loads(cfg[0]) if cfg else None), records


@dataclass
class CertifyResult:
    """A finished (or resumed) certification run."""

    run: str
    config: dict[str, Any]
    records: list[TrialRecord]
    computed: int
    seconds: float
    radii: list[float] = field(default_factory=list)

    def table(self, confidence: float = 0.95) -> list[dict[str, Any]]:
        return certified_accuracy(self.records, self.radii, confidence)

    def median_snr_db(self) -> float | None:
        """Median certified radius as SNR in dB over the trials that did not abstain."""
        return _median([r.snr_db for r in self.records if r.snr_db is not None])


def run_certify(model: str = "ge2e", task: str = "csi-e", dataset: str = "embedded", sigma: float = 0.005,
                n: int = 100, n0: int = 10, alpha: float = 0.001, limit: int | None = None, seed: int = 0,
                out: str | Path = "sec4sr-out", defense: str = "", batch: int = 256, trials_per_step: int = 4,
                device: str = "cpu", length_s: float | None = None, radii: Sequence[float] | None = None,
                progress: Callable[[int, int], None] | None = None) -> CertifyResult:
    """Certify the trials of ``task`` (as ``sec4sr run`` chooses them) with ``smooth:sigma=σ`` in front of
    ``defense`` (the base chain), storing each trial in ``<out>/results.sqlite``; trials already stored for the
    same run identity are read back, not recomputed."""
    from sec4sr_core.base.types import DEFAULT_LENGTH_S
    from sec4sr_core.compose.enroll import build_system, task_trials
    from sec4sr_core.compose.factories import build_defenses, check_device, load_model, resolve_dataset, system_digest
    from sec4sr_core.sdk.audio import load_batch

    for name, value in (("n", n), ("n0", n0), ("batch", batch), ("trials_per_step", trials_per_step)):
        if value < 1:
            raise ParameterError(f"{name} must be at least 1, got {value}")
    if not 0.0 < alpha < 0.5:
        raise ParameterError(f"alpha must be in (0, 0.5), got {alpha}")
    if limit is not None and limit < 1:
        raise ParameterError(f"limit must be at least 1, got {limit}")
    check_device(device)
    length_s = DEFAULT_LENGTH_S if length_s is None else float(length_s)
    smooth_spec = f"smooth:sigma={sigma!r},n={n},batch={batch}"
    defenses = build_defenses(smooth_spec + (f"+{defense}" if defense else ""))
    smooth, rest = split_smoothing(defenses)
    assert smooth is not None
    m = load_model(model, device)
    ds = resolve_dataset(dataset)
    system, _ = build_system(m, task, ds)
    smoothed = SmoothedSystem(system, smooth, rest)
    trials = task_trials(task, ds, system.speakers, seed, limit)
    config = {"model": model, "task": Task(task).value, "dataset": ds.name, "dataset_id": ds.fingerprint(),
              "system": system_digest(system), "defense": smoothed.label(), "sigma": float(sigma), "n": n, "n0": n0,
              "alpha": alpha, "seed": seed, "batch": batch, "length_s": length_s}
    run = digest(config)
    out = Path(out)
    conn = _connect(out)
    t_start = time.perf_counter()
    computed = 0
    try:
        with conn:
            conn.execute("INSERT OR IGNORE INTO certify_runs (run, config, created) VALUES (?, ?, ?)",
                         (run, json.dumps(config, sort_keys=True), time.time()))
            conn.execute("UPDATE certify_runs SET created = ? WHERE run = ?", (time.time(), run))
        done = {r[0] for r in conn.execute("SELECT trial FROM certify WHERE run = ?", (run,))}
        todo = [i for i in range(len(trials.utterances)) if i not in done]
        length = int(round(length_s * 16000))
        for s in range(0, len(todo), trials_per_step):
            idx = todo[s : s + trials_per_step]
            t0 = time.perf_counter()
            x = load_batch([trials.utterances[i].path for i in idx], length).to(device)
            claims = None if trials.claims is None else trials.claims[idx].to(device)
            seeds = [batch_seed(seed, "certify", trials.utterances[i].id) for i in idx]
            certs = certify(smoothed, x, claims, n0, n, alpha, seeds)
            per = (time.perf_counter() - t0) / len(idx)
            norms = x.flatten(1).double().norm(dim=1).tolist()
            rows = []
            for j, (i, c) in enumerate(zip(idx, certs)):
                u, label = trials.utterances[i], int(trials.labels[i])
                claim = None if trials.claims is None else int(trials.claims[i])
                rec = TrialRecord(i, u.id, u.speaker, label, claim, c.prediction, c.abstained,
                                  (not c.abstained) and c.prediction == label, c.count, c.n, c.p_lower, c.radius,
                                  norms[j], None if c.abstained else snr_db(norms[j], c.radius), per)
                rows.append(tuple(int(v) if isinstance(v, bool) else v for v in asdict(rec).values()))
            with conn:
                conn.executemany(f"INSERT OR REPLACE INTO certify (run, {', '.join(_COLUMNS)}) VALUES "
                                 f"({', '.join('?' * (len(_COLUMNS) + 1))})", [(run, *r) for r in rows])
            computed += len(idx)
            if progress is not None:
                progress(len(done) + computed, len(trials.utterances))
    finally:
        conn.close()
    _, records = stored_records(out, run)
    return CertifyResult(run, config, records, computed, time.perf_counter() - t_start,
                         list(radii) if radii is not None else default_radii(sigma, n, alpha))
