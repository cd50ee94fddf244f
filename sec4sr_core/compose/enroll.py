"""Enrollment, EER thresholds and trial lists: from a backbone and a dataset to an enrolled system.

An enrollment (speakers, enrolled embeddings, SV and OSI thresholds with their EERs) is computed once and stored in
the model store (``systems/``), keyed by model, model parameters and the dataset's fingerprint; nobody copies
thresholds from stdout.

Thresholds are chosen at the equal error rate on held-out trials (``dev`` genuine, ``imposter-dev`` imposters):

* SV: targets = each dev utterance's score against its own speaker; non-targets = its scores against the other
  enrolled speakers, and every imposter utterance's scores against every enrolled speaker.
* OSI: targets = the true-speaker score of dev utterances that are identified correctly; non-targets = the best
  score of each imposter utterance.

With the strict decision ``score > θ``: FRR(θ) = share of targets ≤ θ, FAR(θ) = share of non-targets > θ. θ is the
midpoint between adjacent sorted scores that minimises |FRR − FAR|; the EER reported is (FRR + FAR)/2 there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sec4sr_core.base.errors import Sec4srError
from sec4sr_core.base.types import DEFAULT_LENGTH_S
from sec4sr_core.sdk.audio import load_batch
from sec4sr_core.sdk.interfaces import REJECT, Dataset, SpeakerModel, Task, Utterance
from sec4sr_core.sdk.modelstore import home, params_hash, read_torch_file
from sec4sr_core.sdk.system import SpeakerSystem


def _sorted_counts(targets: torch.Tensor, nontargets: torch.Tensor):
    """Distinct scores ``u`` (ascending) and the cumulative target / non-target counts at or below each, in float64
    on the CPU: one sort, O(N log N) time and O(N) memory."""
    t = targets.detach().double().flatten().cpu()
    n = nontargets.detach().double().flatten().cpu()
    if t.numel() == 0 or n.numel() == 0:
        raise Sec4srError("EER and minDCF need at least one target and one non-target score")
    if not (torch.isfinite(t).all() and torch.isfinite(n).all()):
        raise Sec4srError("EER and minDCF need finite scores (got NaN or infinite ones)")
    values, inverse = torch.cat([t, n]).unique(sorted=True, return_inverse=True)
    cum_t = torch.bincount(inverse[: t.numel()], minlength=values.numel()).cumsum(0).double()
    cum_n = torch.bincount(inverse[t.numel():], minlength=values.numel()).cumsum(0).double()
    return values, cum_t, cum_n, t.numel(), n.numel()


def eer_threshold(targets: torch.Tensor, nontargets: torch.Tensor) -> tuple[float, float]:
    """(θ, EER) for the strict rule ``accept iff score > θ`` (see module docstring).

    Sorting-based: the candidate thresholds are one below the lowest score, the midpoints of adjacent distinct
    scores and one above the highest; FRR/FAR at each come from cumulative counts over the sorted scores, so N
    scores cost O(N log N) time and O(N) memory (the same θ and EER as evaluating every candidate against every
    score, ties included)."""
    values, cum_t, cum_n, nt, nn_ = _sorted_counts(targets, nontargets)
    cands = torch.cat([values[:1] - 1.0, (values[1:] + values[:-1]) / 2, values[-1:] + 1.0])
    frr = torch.cat([cum_t.new_zeros(1), cum_t]) / nt  # share of targets <= candidate
    far = (nn_ - torch.cat([cum_n.new_zeros(1), cum_n])) / nn_  # share of non-targets > candidate
    i = int(torch.argmin((frr - far).abs()))
    return float(cands[i]), float((frr[i] + far[i]) / 2)


def min_dcf(targets: torch.Tensor, nontargets: torch.Tensor, p_target: float = 0.01) -> float:
    """Normalised minimum detection cost (C_miss = C_fa = 1, prior ``p_target``) over all thresholds, for
    ``score > θ``: min over θ of (p·FRR + (1−p)·FAR) / min(p, 1−p). Sorting-based, O(N log N)."""
    if not 0.0 < p_target < 1.0:
        raise Sec4srError(f"minDCF needs a target prior in (0, 1), got {p_target}")
    _, cum_t, cum_n, nt, nn_ = _sorted_counts(targets, nontargets)
    frr = torch.cat([cum_t.new_zeros(1), cum_t]) / nt
    far = (nn_ - torch.cat([cum_n.new_zeros(1), cum_n])) / nn_
    dcf = p_target * frr + (1 - p_target) * far
    return float(dcf.min() / min(p_target, 1 - p_target))


#: target priors of the minDCF values reported for SV (C_miss = C_fa = 1)
DCF_PRIORS = (0.01, 0.05)


def sv_metrics(targets: torch.Tensor, nontargets: torch.Tensor) -> dict[str, float]:
    """``{"eer", "threshold", "min_dcf_0.01", "min_dcf_0.05"}`` of target / non-target trial scores."""
    theta, eer = eer_threshold(targets, nontargets)
    out = {"eer": eer, "threshold": theta}
    for p in DCF_PRIORS:
        out[f"min_dcf_{p:g}"] = min_dcf(targets, nontargets, p)
    return out


def as_norm(scores: torch.Tensor, enroll_cohort: torch.Tensor, test_cohort: torch.Tensor, top_k: int = 300
            ) -> torch.Tensor:
    """Adaptive s-norm (AS-Norm) of trial scores.

    ``scores`` (N,) are raw trial scores; ``enroll_cohort`` / ``test_cohort`` (N, C) the scores of each trial's
    enrollment / test side against a cohort of C impostor embeddings. Each side is normalised by the mean and
    standard deviation of its ``top_k`` highest cohort scores (all C when C < top_k):
    ``0.5·((s − μ_e)/σ_e + (s − μ_t)/σ_t)``."""
    if enroll_cohort.dim() != 2 or test_cohort.dim() != 2 or enroll_cohort.shape[0] != scores.shape[0] \
            or test_cohort.shape[0] != scores.shape[0]:
        raise Sec4srError("as_norm needs scores (N,) and cohort scores (N, C) for both sides")
    if enroll_cohort.shape[1] < 2 or top_k < 2:
        raise Sec4srError(f"AS-Norm needs a cohort of at least 2 embeddings and top_k >= 2 "
                          f"(cohort {enroll_cohort.shape[1]}, top_k {top_k})")
    mu_e, sd_e = cohort_stats(enroll_cohort, top_k)
    mu_t, sd_t = cohort_stats(test_cohort, top_k)
    return 0.5 * ((scores - mu_e) / sd_e + (scores - mu_t) / sd_t)


def cohort_stats(cohort_scores: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation (N,) of the ``top_k`` highest of each row of cohort scores (N, C)."""
    top = cohort_scores.topk(min(int(top_k), cohort_scores.shape[1]), dim=1).values
    return top.mean(dim=1), top.std(dim=1).clamp_min(1e-8)


@torch.no_grad()
def embed_utterances(
    model: SpeakerModel, utts: Sequence[Utterance], length_s: float = DEFAULT_LENGTH_S, batch_size: int = 32
) -> torch.Tensor:
    """Embeddings (or logits) (N, D) of utterances, in batches of fixed length."""
    length = int(round(length_s * 16000))
    out = []
    for i in range(0, len(utts), batch_size):
        x = load_batch([u.path for u in utts[i : i + batch_size]], length).to(model.device)
        out.append(model.embed(x, "wave").detach())
    return torch.cat(out, dim=0) if out else torch.zeros(0)


@torch.no_grad()
def trial_list_scores(
    model: SpeakerModel, trials: Sequence[tuple[int, Utterance, Utterance]], length_s: float = DEFAULT_LENGTH_S,
    cohort: Sequence[Utterance] = (), top_k: int = 0, batch_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of an SV trial list ``(label, enroll, test)``: (target scores, non-target scores), float64 on the CPU.

    Every distinct utterance is embedded once (cropped/padded to ``length_s``); a trial's score is
    ``model.score(test, enroll)``. With ``top_k > 0`` and a ``cohort``, scores are AS-Norm-normalised
    (:func:`as_norm`): the cohort is one embedding per cohort speaker (``model.enroll_embeddings`` of its
    utterances), and each distinct utterance's top-``top_k`` cohort statistics are computed once."""
    if not trials:
        raise Sec4srError("the SV trial list is empty")
    utts: dict[str, Utterance] = {}
    for _, a, b in trials:
        utts.setdefault(a.id, a)
        utts.setdefault(b.id, b)
    ids = list(utts)
    index = {k: i for i, k in enumerate(ids)}
    embs = embed_utterances(model, [utts[k] for k in ids], length_s, batch_size)
    enr = torch.tensor([index[a.id] for _, a, _ in trials])
    tst = torch.tensor([index[b.id] for _, _, b in trials])
    labels = torch.tensor([int(lab) for lab, _, _ in trials], dtype=torch.bool)
    scores = torch.cat([model.score(embs[tst[i:i + 1024]], embs[enr[i:i + 1024]]).diagonal()
                        for i in range(0, len(trials), 1024)]).double().cpu()
    if top_k:
        if not cohort:
            raise Sec4srError("AS-Norm needs a cohort of impostor utterances; this dataset has none")
        if top_k < 2:
            raise Sec4srError(f"AS-Norm needs top_k >= 2, got {top_k}")
        coh_utts = list(cohort)
        coh_embs = embed_utterances(model, coh_utts, length_s, batch_size)
        speakers = sorted({u.speaker for u in coh_utts})  # one cohort entry per speaker (its enrolled embedding)
        if len(speakers) < 2:
            raise Sec4srError(f"AS-Norm needs at least 2 cohort speakers, got {len(speakers)}")
        owner = [u.speaker for u in coh_utts]
        coh = torch.stack([model.enroll_embeddings(coh_embs[[i for i, o in enumerate(owner) if o == s]])
                           for s in speakers])
        mu, sd = cohort_stats(model.score(embs, coh).double().cpu(), top_k)  # per distinct utterance (U,)
        scores = 0.5 * ((scores - mu[enr]) / sd[enr] + (scores - mu[tst]) / sd[tst])
    return scores[labels], scores[~labels]


@dataclass
class Enrollment:
    speakers: list[str]
    enrolled: torch.Tensor  # (S, D)
    thresholds: dict[str, float]  # "sv", "osi"
    eer: dict[str, float]
    stats: dict[str, float]

    def to_payload(self) -> dict[str, Any]:
        return {
            "speakers": self.speakers,
            "enrolled": self.enrolled.cpu(),
            "thresholds": self.thresholds,
            "eer": self.eer,
            "stats": self.stats,
        }

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> Enrollment:
        return cls(list(p["speakers"]), p["enrolled"], dict(p["thresholds"]), dict(p["eer"]), dict(p.get("stats", {})))


def enrollment_path(model: SpeakerModel, dataset: Dataset, root: Path | None = None) -> Path:
    return (root or home()) / "systems" / f"{model.name}-{params_hash(model.params)}-{dataset.name}-{dataset.fingerprint()}.pt"


def enroll(model: SpeakerModel, dataset: Dataset, length_s: float = DEFAULT_LENGTH_S) -> Enrollment:
    """Enroll ``dataset``'s enrolled speakers and choose SV/OSI thresholds at the EER on its dev trials."""
    speakers = dataset.enrolled_speakers()
    if not speakers:
        raise Sec4srError(f"dataset {dataset.name!r} has no enrolled speakers (empty 'enroll' split)")
    enroll_utts = dataset.split("enroll")
    embs = embed_utterances(model, enroll_utts, length_s)
    index = {s: i for i, s in enumerate(speakers)}
    owner = torch.tensor([index[u.speaker] for u in enroll_utts])
    enrolled = torch.stack([model.enroll_embeddings(embs[owner == i]) for i in range(len(speakers))])

    dev = [u for u in dataset.split("dev") if u.speaker in index]
    imp = [u for u in dataset.split("imposter-dev") if u.speaker not in index]
    thresholds: dict[str, float] = {}
    eer: dict[str, float] = {}
    stats: dict[str, float] = {}
    if dev and imp:
        dev_scores = model.score(embed_utterances(model, dev, length_s), enrolled).cpu()
        imp_scores = model.score(embed_utterances(model, imp, length_s), enrolled).cpu()
        labels = torch.tensor([index[u.speaker] for u in dev])
        true = dev_scores.gather(1, labels.view(-1, 1)).squeeze(1)
        others = dev_scores.masked_fill(torch.nn.functional.one_hot(labels, len(speakers)).bool(), float("nan"))
        others = others[~others.isnan()]
        sv_non = torch.cat([others, imp_scores.flatten()])
        thresholds["sv"], eer["sv"] = eer_threshold(true, sv_non)
        stats["sv_min_dcf"] = min_dcf(true, sv_non)
        stats["sv_min_dcf_0.05"] = min_dcf(true, sv_non, 0.05)
        correct = dev_scores.argmax(dim=1) == labels
        osi_targets = true[correct] if bool(correct.any()) else true
        imp_best = imp_scores.max(dim=1).values
        thresholds["osi"], eer["osi"] = eer_threshold(osi_targets, imp_best)
        stats["dev_csi_accuracy"] = float(correct.double().mean())
        # identification error rate at the OSI threshold: accepted genuine trials given the wrong speaker
        accepted = dev_scores.max(dim=1).values > thresholds["osi"]
        stats["osi_ier"] = float((accepted & ~correct).double().mean())
    return Enrollment(speakers, enrolled.cpu(), thresholds, eer, stats)


def load_or_enroll(
    model: SpeakerModel, dataset: Dataset, length_s: float = DEFAULT_LENGTH_S, refresh: bool = False,
    path: Path | None = None,
) -> Enrollment:
    """The enrollment cached at ``path`` (default :func:`enrollment_path`) when it was made with ``length_s`` by
    the same weights (a digest of the model's state: replacing a checkpoint behind the same ``path=`` re-enrolls),
    else a new one, stored there atomically."""
    from sec4sr_core.compose.factories import weights_digest

    path = path or enrollment_path(model, dataset)
    digest = weights_digest(model)
    if path.exists() and not refresh:
        payload = read_torch_file(path)
        if isinstance(payload, dict) and payload.get("length_s") == length_s and payload.get("weights") == digest:
            return Enrollment.from_payload(payload)
    e = enroll(model, dataset, length_s)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({**e.to_payload(), "length_s": length_s, "weights": digest}, tmp)
    tmp.replace(path)
    return e


def build_system(
    model: SpeakerModel,
    task: Task | str,
    dataset: Dataset,
    length_s: float = DEFAULT_LENGTH_S,
    threshold: float | None = None,
) -> tuple[SpeakerSystem, Enrollment | None]:
    """An enrolled (or, for classifiers, labelled) system for ``task``; threshold from the stored enrollment."""
    task = Task(task)
    if model.output == "logits":
        if not model.class_ids:
            raise Sec4srError(f"model {model.name!r} has no class labels; train it first (`sec4sr train`)")
        return SpeakerSystem(model, task, model.class_ids), None
    e = load_or_enroll(model, dataset, length_s)
    th = threshold
    if th is None and task.has_threshold:
        key = "sv" if task == Task.SV else "osi"
        if key not in e.thresholds:
            raise Sec4srError(f"dataset {dataset.name!r} has no dev/imposter-dev trials to choose the {key} threshold")
        th = e.thresholds[key]
    return SpeakerSystem(model, task, e.speakers, e.enrolled.to(model.device), th), e


@dataclass
class Trials:
    """The evaluation trials of a task: utterances, true labels (−1 = imposter) and SV claims."""

    utterances: list[Utterance]
    labels: torch.Tensor
    claims: torch.Tensor | None


def task_trials(
    task: Task | str, dataset: Dataset, speakers: Sequence[str], seed: int = 0, limit: int | None = None,
    genuine_split: str = "test", imposter_split: str = "imposter-test",
) -> Trials:
    """Trials for ``task``: CSI-E the genuine test split; CSI-NE ``heldout``; SV/OSI genuine + imposter trials
    (SV imposters claim a seeded random enrolled speaker). A seeded shuffle, then the first ``limit``."""
    task = Task(task)
    index = {s: i for i, s in enumerate(speakers)}
    g = torch.Generator().manual_seed(seed)
    if task == Task.CSI_NE:
        utts = [u for u in dataset.split("heldout") if u.speaker in index]
        labels = [index[u.speaker] for u in utts]
        claims = None
    else:
        genuine = [u for u in dataset.split(genuine_split) if u.speaker in index]
        utts = list(genuine)
        labels = [index[u.speaker] for u in genuine]
        claims_l = [index[u.speaker] for u in genuine]
        if task.has_threshold:
            imps = [u for u in dataset.split(imposter_split) if u.speaker not in index]
            utts += imps
            labels += [REJECT] * len(imps)
            claims_l += torch.randint(0, len(speakers), (len(imps),), generator=g).tolist()
        if task == Task.SV:
            labels = [0 if lab != REJECT else REJECT for lab in labels]
            claims = torch.tensor(claims_l, dtype=torch.int64)
        else:
            claims = None
    if not utts:
        raise Sec4srError(f"dataset {dataset.name!r} has no trials for task {task.value}")
    order = torch.randperm(len(utts), generator=g)
    if limit:
        order = order[:limit]
    return Trials(
        [utts[i] for i in order.tolist()],
        torch.tensor(labels, dtype=torch.int64)[order],
        None if claims is None else claims[order],
    )
