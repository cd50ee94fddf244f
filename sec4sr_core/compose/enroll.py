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

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from sec4sr_core.sdk.audio import load_batch
from sec4sr_core.base.types import DEFAULT_LENGTH_S
from sec4sr_core.base.errors import Sec4srError
from sec4sr_core.sdk.interfaces import REJECT, Dataset, SpeakerModel, Task, Utterance
from sec4sr_core.sdk.modelstore import home, params_hash, read_torch_file
from sec4sr_core.sdk.system import SpeakerSystem



def eer_threshold(targets: torch.Tensor, nontargets: torch.Tensor) -> tuple[float, float]:
    """(θ, EER) for the strict rule ``accept iff score > θ`` (see module docstring). Vectorised."""
    t = targets.detach().double().flatten().cpu()
    n = nontargets.detach().double().flatten().cpu()
    if t.numel() == 0 or n.numel() == 0:
        raise Sec4srError("EER needs at least one target and one non-target score")
    allv = torch.cat([t, n]).unique()  # sorted
    cands = torch.cat([allv[:1] - 1.0, (allv[1:] + allv[:-1]) / 2, allv[-1:] + 1.0])
    frr = (t.unsqueeze(0) <= cands.unsqueeze(1)).double().mean(dim=1)
    far = (n.unsqueeze(0) > cands.unsqueeze(1)).double().mean(dim=1)
    i = int(torch.argmin((frr - far).abs()))
    return float(cands[i]), float((frr[i] + far[i]) / 2)


def min_dcf(targets: torch.Tensor, nontargets: torch.Tensor, p_target: float = 0.01) -> float:
    """Normalised minimum detection cost (C_miss = C_fa = 1) over all thresholds, for ``score > θ``."""
    t = targets.detach().double().flatten().cpu()
    n = nontargets.detach().double().flatten().cpu()
    allv = torch.cat([t, n]).unique()
    cands = torch.cat([allv[:1] - 1.0, allv])
    frr = (t.unsqueeze(0) <= cands.unsqueeze(1)).double().mean(dim=1)
    far = (n.unsqueeze(0) > cands.unsqueeze(1)).double().mean(dim=1)
    dcf = p_target * frr + (1 - p_target) * far
    return float(dcf.min() / min(p_target, 1 - p_target))


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
    def from_payload(cls, p: dict[str, Any]) -> "Enrollment":
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
    """The enrollment cached at ``path`` (default :func:`enrollment_path`) when it was made with ``length_s``,
    else a new one, stored there atomically."""
    path = path or enrollment_path(model, dataset)
    if path.exists() and not refresh:
        payload = read_torch_file(path)
        if isinstance(payload, dict) and payload.get("length_s") == length_s:
            return Enrollment.from_payload(payload)
    e = enroll(model, dataset, length_s)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({**e.to_payload(), "length_s": length_s}, tmp)
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
