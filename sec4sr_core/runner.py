"""Running a study: systems × defense rows × attack columns × settings, resumably, into the result store.

A study is split into deterministic *batches* of the task's trials (a seeded order, then fixed-size chunks), and
every batch of every cell is atomic: its rows for every defense row are written in one transaction. A batch's random
streams are seeded from (study seed, cell, batch index), so a re-run, a resumed run and a run on another executor
produce the same rows.

Settings:

* ``non-adaptive``: craft once on the undefended system, evaluate the adversarial audio (as saved, 16-bit) on every
  defense row.
* ``adaptive``: craft on each defended system (BPDA for non-differentiable defenses is automatic; ``eot`` draws for
  randomized ones), evaluate on that same system.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .audio import load_batch, quantize_16bit, save_audio
from .enroll import DEFAULT_LENGTH_S, Trials, build_system, task_trials
from .errors import Sec4srError
from .interfaces import REJECT, Attack, Dataset, Defense, SpeakerModel, Task
from .params import parse_chain, parse_spec
from .plugins import get_registry, pm, versions
from .store import ResultStore
from .store_models import home
from .targets import batch_seed, choose_targets
from .system import DefendedSystem, SpeakerSystem

Setting = Literal["non-adaptive", "adaptive"]


class StudyConfig(BaseModel):
    """A study: what ``sec4sr run`` (flags or a TOML file) describes."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("ge2e", description="backbone spec, e.g. 'ge2e'")
    task: Task = Field(Task.CSI_E, description="csi-e, csi-ne, sv or osi")
    dataset: str = Field("embedded", description="dataset spec or a folder path")
    attacks: list[str] = Field(default_factory=list, description="attack specs (columns)")
    defenses: list[str] = Field(default_factory=list, description="defense chain specs (rows; 'none' is implicit)")
    defense_order: Literal["sequential", "average"] = "sequential"
    settings: list[Setting] = Field(default_factory=lambda: ["non-adaptive"])
    eot: int = Field(1, ge=1, description="EOT draws when crafting adaptively against randomized defenses")
    targeted: bool = False
    seed: int = 0
    device: str = "cpu"
    limit: int | None = Field(None, ge=1, description="evaluate only the first N trials (seeded order)")
    batch_size: int = Field(16, ge=1)
    length_s: float = Field(DEFAULT_LENGTH_S, gt=0, description="every utterance is cropped/padded to this length")
    metrics: list[str] = Field(default_factory=lambda: ["linf", "l2", "snr"])
    threshold: float | None = Field(None, description="override the stored SV/OSI threshold")
    out: Path = Path("sec4sr-out")
    save_audio: bool = True

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("cpu", "cuda") and not v.startswith("cuda:"):
            raise ValueError("device must be 'cpu' or 'cuda'")
        return v


def slug(text: str) -> str:
    """A readable, filesystem-safe form of a spec: ``qt:q=512+at:snr=30`` -> ``qt_q512+at_snr30``."""
    text = text.replace(":", "_").replace("=", "").replace(",", "_").replace("/", "-").replace("|", "~")
    return re.sub(r"[^A-Za-z0-9_.+~-]", "", text) or "x"


def resolve_dataset(spec: str) -> Dataset:
    """A dataset from its spec (``embedded``, ``folder:root=...``) or from a folder path."""
    if Path(spec).expanduser().is_dir():
        return get_registry().build("dataset", ("folder", {"root": spec}))
    return get_registry().build("dataset", spec)


def load_model(spec: str, device: str = "cpu") -> SpeakerModel:
    """Build a backbone from its spec, load its weights from the model store, put it in eval mode on ``device``."""
    model = get_registry().build("model", spec)
    model.load_weights(home())
    return model.eval().to(device)


def build_defenses(chain: str) -> list[Defense]:
    reg = get_registry()
    return [reg.build("defense", part) for part in parse_chain(chain)]


def check_device(device: str) -> None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise Sec4srError("--device cuda was asked for, but no CUDA device is available")


@dataclass
class Cell:
    defense: str
    attack: str
    setting: str
    rows: list[dict[str, Any]] = field(default_factory=list)


class Study:
    """One study run. ``Study(config).run()`` returns the JSON-able summary."""

    def __init__(self, config: StudyConfig, progress: bool = True) -> None:
        self.config = config
        self.progress = progress
        check_device(config.device)
        reg = get_registry()
        # validate every name before any work starts, so a typo fails fast
        for a in config.attacks:
            reg.resolve("attack", a)
        for d in config.defenses:
            for part in parse_chain(d):
                reg.resolve("defense", part)
        for m in config.metrics:
            reg.resolve("metric", m)
        self.model = load_model(config.model, config.device)
        self.dataset = resolve_dataset(config.dataset)
        self.system, self.enrollment = build_system(
            self.model, config.task, self.dataset, config.length_s, config.threshold
        )
        self.trials: Trials = task_trials(config.task, self.dataset, self.system.speakers, config.seed, config.limit)
        self.rows_spec = [("none", [])] + [(d, build_defenses(d)) for d in config.defenses]
        self.systems = {label: DefendedSystem(self.system, ds, config.defense_order) for label, ds in self.rows_spec}
        self.metrics = [reg.build("metric", m) for m in config.metrics]
        self.store = ResultStore(Path(config.out) / "results.sqlite")
        self.system_label = config.model
        self.versions = versions()
        self.targets = (
            choose_targets(self.trials.labels, [u.id for u in self.trials.utterances], self.system.task,
                           len(self.system.speakers), config.seed)
            if config.targeted else None
        )

    # -- helpers --------------------------------------------------------------------------------------------------
    def batches(self) -> Iterator[tuple[int, slice]]:
        n = len(self.trials.utterances)
        bs = self.config.batch_size
        for i, start in enumerate(range(0, n, bs)):
            yield i, slice(start, min(start + bs, n))

    def load(self, sl: slice) -> torch.Tensor:
        length = int(round(self.config.length_s * 16000))
        return load_batch([u.path for u in self.trials.utterances[sl]], length).to(self.config.device)

    def claims(self, sl: slice) -> torch.Tensor | None:
        return None if self.trials.claims is None else self.trials.claims[sl].to(self.config.device)

    def _base_row(self, i: int, defense: str, attack: str, setting: str) -> dict[str, Any]:
        u = self.trials.utterances[i]
        return {
            "system": self.system_label,
            "task": self.system.task.value,
            "defense": defense,
            "attack": attack,
            "setting": setting,
            "utterance": u.id,
            "speaker": u.speaker,
            "label": int(self.trials.labels[i]),
            "target": None if self.targets is None else int(self.targets[i]),
            "claim": None if self.trials.claims is None else int(self.trials.claims[i]),
            "seed": self.config.seed,
            "versions": self.versions,
        }

    def _todo(self, sl: slice, defense: str, attack: str, setting: str) -> bool:
        done = self.store.done(self.system_label, self.system.task.value, defense, attack, setting)
        return any(u.id not in done for u in self.trials.utterances[sl])

    @torch.no_grad()
    def _evaluate(self, ds: DefendedSystem, x: torch.Tensor, sl: slice, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        ds.seed(seed)
        scores = ds(x, claims=self.claims(sl))
        return scores.cpu(), ds.decide(scores).cpu()

    def _emit(self, rows: list[dict[str, Any]]) -> None:
        self.store.add_rows(rows)
        for r in rows:
            pm.hook.sec4sr_result(row=r)

    # -- the study ------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.config
        self.store.set_meta("config", cfg.model_dump(mode="json"))
        self.store.set_meta("versions", self.versions)
        if self.enrollment is not None:
            self.store.set_meta("enrollment", {"thresholds": self.enrollment.thresholds, "eer": self.enrollment.eer})
        self._benign()
        for attack_spec in cfg.attacks:
            for setting in cfg.settings:
                if setting == "non-adaptive":
                    self._non_adaptive(attack_spec)
                else:
                    self._adaptive(attack_spec)
        summary = self.summary()
        pm.hook.sec4sr_run_finished(summary=summary)
        return summary

    def _bar(self, total: int, desc: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, disable=not self.progress, leave=False, mininterval=1.0, unit="batch")

    def _benign(self) -> None:
        batches = list(self.batches())
        with self._bar(len(batches) * len(self.systems), "benign") as bar:
            for label, ds in self.systems.items():
                for bi, sl in batches:
                    bar.update(1)
                    if not self._todo(sl, label, "", "benign"):
                        continue
                    x = self.load(sl)
                    scores, dec = self._evaluate(ds, x, sl, batch_seed(self.config.seed, label, "benign", bi))
                    rows = []
                    for j, i in enumerate(range(sl.start, sl.stop)):
                        r = self._base_row(i, label, "", "benign")
                        r.update(decision=int(dec[j]), correct=int(dec[j] == r["label"]), success=None,
                                 scores=scores[j].tolist(), queries=0, time_s=0.0, metrics={})
                        rows.append(r)
                    self._emit(rows)

    def _attack(self, spec: str, ds: DefendedSystem, x: torch.Tensor, sl: slice, seed: int) -> tuple[Any, float]:
        from .oracle import make_oracle

        attack: Attack = get_registry().build("attack", spec)
        y = self.trials.labels[sl] if self.targets is None else self.targets[sl]
        eot = self.config.eot if ds.randomized else 1
        oracle = make_oracle(ds, attack.knowledge, n=x.shape[0], claims=self.claims(sl), eot=eot, seed=seed)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        result = attack.run(oracle, x, y.to(x.device), targeted=self.targeted)
        return result, time.perf_counter() - t0

    @property
    def targeted(self) -> bool:
        return self.config.targeted

    def _audio_path(self, setting: str, attack: str, defense: str, i: int) -> Path:
        u = self.trials.utterances[i]
        parts = [setting, slug(attack)] + ([slug(defense)] if setting == "adaptive" else [])
        return Path(self.config.out) / "audio" / Path(*parts) / u.speaker / f"{Path(u.id).name}.wav"

    def _adv_rows(
        self, attack: str, setting: str, targets: list[tuple[str, DefendedSystem]], crafted_on: str,
        x: torch.Tensor, adv: torch.Tensor, result: Any, elapsed: float, sl: slice, bi: int,
    ) -> list[dict[str, Any]]:
        adv = quantize_16bit(adv.detach())
        n = x.shape[0]
        metric_values = {m.name: m.compute(x.cpu(), adv.cpu()) for m in self.metrics}
        paths: list[str | None] = [None] * n
        if self.config.save_audio:
            for j, i in enumerate(range(sl.start, sl.stop)):
                paths[j] = str(save_audio(self._audio_path(setting, attack, crafted_on, i), adv[j]))
        rows = []
        for label, ds in targets:
            scores, dec = self._evaluate(ds, adv, sl, batch_seed(self.config.seed, label, attack, setting, "eval", bi))
            for j, i in enumerate(range(sl.start, sl.stop)):
                r = self._base_row(i, label, attack, setting)
                goal = r["target"] if self.targeted else r["label"]
                ok = int(dec[j] == goal) if self.targeted else int(dec[j] != goal)
                r.update(
                    decision=int(dec[j]), correct=int(dec[j] == r["label"]), success=ok,
                    scores=scores[j].tolist(), queries=int(result.queries[j]), time_s=elapsed / n,
                    metrics={**{k: v[j] for k, v in metric_values.items()},
                             "attack_success": bool(result.success[j])},
                    audio_path=paths[j],
                )
                rows.append(r)
        return rows

    def _non_adaptive(self, attack: str) -> None:
        base = self.systems["none"]
        targets = list(self.systems.items())
        batches = list(self.batches())
        with self._bar(len(batches), f"{attack} (non-adaptive)") as bar:
            for bi, sl in batches:
                bar.update(1)
                if not any(self._todo(sl, label, attack, "non-adaptive") for label in self.systems):
                    continue
                x = self.load(sl)
                result, elapsed = self._attack(attack, base, x, sl, batch_seed(self.config.seed, attack, "na", bi))
                self._emit(self._adv_rows(attack, "non-adaptive", targets, "none", x, result.adv, result, elapsed, sl, bi))

    def _adaptive(self, attack: str) -> None:
        batches = list(self.batches())
        with self._bar(len(batches) * len(self.systems), f"{attack} (adaptive)") as bar:
            for label, ds in self.systems.items():
                for bi, sl in batches:
                    bar.update(1)
                    if not self._todo(sl, label, attack, "adaptive"):
                        continue
                    x = self.load(sl)
                    seed = batch_seed(self.config.seed, attack, "ad", label, bi)
                    result, elapsed = self._attack(attack, ds, x, sl, seed)
                    self._emit(self._adv_rows(attack, "adaptive", [(label, ds)], label, x, result.adv, result, elapsed, sl, bi))

    # -- results --------------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return summarize(self.store, self.config, self.system_label, self.enrollment)


def summarize(store: ResultStore, config: StudyConfig, system_label: str, enrollment: Any = None) -> dict[str, Any]:
    """The JSON document of ``sec4sr run --json``: one entry per (defense, attack, setting) cell."""
    task = Task(config.task).value
    defenses = ["none"] + list(config.defenses)
    benign: dict[str, float] = {}
    results = []
    for d in defenses:
        rows = store.rows("WHERE system=? AND task=? AND defense=? AND setting='benign'", (system_label, task, d))
        benign[d] = _mean([r["correct"] for r in rows])
    for d in defenses:
        for a in config.attacks:
            for s in config.settings:
                rows = store.rows(
                    "WHERE system=? AND task=? AND defense=? AND attack=? AND setting=?", (system_label, task, d, a, s)
                )
                metric_names = sorted({k for r in rows for k in (r["metrics"] or {}) if k != "attack_success"})
                results.append({
                    "system": system_label, "task": task, "defense": d, "attack": a, "setting": s,
                    "n": len(rows),
                    "benign_accuracy": benign[d],
                    "adversarial_accuracy": _mean([r["correct"] for r in rows]),
                    "success_rate": _mean([r["success"] for r in rows]),
                    "mean_queries": _mean([r["queries"] for r in rows]),
                    "metrics": {m: _mean([_num(r["metrics"].get(m)) for r in rows]) for m in metric_names},
                })
    doc: dict[str, Any] = {
        "system": system_label, "task": task, "dataset": config.dataset, "seed": config.seed,
        "targeted": config.targeted, "out": str(config.out), "benign": benign, "results": results,
        "versions": store.get_meta("versions", {}),
    }
    if enrollment is not None:
        doc["thresholds"] = enrollment.thresholds
        doc["eer"] = enrollment.eer
    return doc


def _num(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, str):
        return float(v)
    return float(v)


def _mean(values: Sequence[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None and float(v) == float(v) and abs(float(v)) != float("inf")]
    return sum(vals) / len(vals) if vals else None


def format_table(summary: dict[str, Any]) -> str:
    """The readable results table: rows = defenses, columns = benign accuracy and accuracy under each attack."""
    cols = []
    for r in summary["results"]:
        key = (r["attack"], r["setting"])
        if key not in cols:
            cols.append(key)
    multi = len({s for _, s in cols}) > 1
    headers = ["defense", "benign"] + [f"{a} ({'A' if s == 'adaptive' else 'NA'})" if multi else a for a, s in cols]
    lines = []
    for d, acc in summary["benign"].items():
        cells = [d, _pct(acc)]
        for a, s in cols:
            hit = next((r for r in summary["results"] if r["defense"] == d and r["attack"] == a and r["setting"] == s), None)
            cells.append(_pct(hit["adversarial_accuracy"]) if hit else "-")
        lines.append(cells)
    widths = [max(len(str(row[i])) for row in [headers] + lines) for i in range(len(headers))]
    fmt = "  ".join("{:<%d}" % widths[0] if i == 0 else "{:>%d}" % w for i, w in enumerate(widths))
    out = [f"system {summary['system']}  task {summary['task']}  dataset {summary['dataset']}  seed {summary['seed']}"
           + ("  targeted" if summary.get("targeted") else ""),
           "accuracy (%) — benign, and under each attack:", fmt.format(*headers), fmt.format(*["-" * w for w in widths])]
    out += [fmt.format(*row) for row in lines]
    return "\n".join(out)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"
