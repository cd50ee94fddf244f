"""Running a study: systems × defense rows × attack columns × settings, resumably, into the result store.

A study is split into deterministic *batches* of each task's trials (a seeded order, then fixed-size chunks), and
every batch of every cell is atomic: its rows for every defense row are written in one transaction. A batch's random
streams are seeded from (study seed, cell, batch index), so a re-run, a resumed run and a run on another executor
produce the same rows. A batch whose rows are all stored is skipped, so killing a study at any moment (SIGKILL
included) and running it again completes it with no duplicated and no lost rows.

Settings:

* ``non-adaptive``: craft once on the undefended system, evaluate the adversarial audio (as saved, 16-bit) on every
  defense row.
* ``adaptive``: craft on each defended system (BPDA for non-differentiable defenses is automatic; ``eot`` draws for
  randomized ones), evaluate on that same system.
* adversarially trained rows: a defense row whose chain contains a *model-variant* defense (``advt``; its class has
  ``model_variant = True`` and ``variant_tag(rest_slug)``) runs on the backbone's variant checkpoint (trained with
  :func:`sec4sr_core.training.train_variant` when missing) behind the rest of the chain (AdvT+X). Such rows take
  part in both settings like any other row.

Every crafted batch is checked for reliability problems (:mod:`sec4sr_core.reliability`); after the study, cells
are compared (black-box beating white-box, accuracy above benign) and the warnings merged into the rows.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from . import reliability
from .audio import load_batch, quantize_16bit, save_audio
from .enroll import DEFAULT_LENGTH_S, Enrollment, Trials, build_system, enroll, task_trials
from .errors import NotTrainedError, ParameterError, Sec4srError
from .interfaces import REJECT, Attack, Dataset, Defense, Knowledge, SpeakerModel, Task
from .metrics import aggregate, mean, r1
from .params import format_spec, parse_chain, parse_spec
from .plugins import get_registry, pm, versions
from .store import ResultStore
from .store_models import home, load_checkpoint, params_hash, read_torch_file
from .system import DefendedSystem, SpeakerSystem
from .targets import batch_seed, choose_targets

Setting = Literal["non-adaptive", "adaptive"]


def _spec_text(value: Any, what: str) -> str:
    """A component spec from TOML: ``"pgd:steps=10"`` or a table ``{name = "pgd", steps = 10}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "name" not in value:
            raise ValueError(f"{what} table needs a 'name' key")
        rest = {k: v for k, v in value.items() if k != "name"}
        return format_spec(str(value["name"]), rest)
    raise ValueError(f"{what} must be a spec string or a table with 'name'")


class SystemSpec(BaseModel):
    """One system of a study: a backbone enrolled for a task (on the study's dataset unless given)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("ge2e", description="backbone spec, e.g. 'ge2e' or 'ecapa:channels=512'")
    task: Task = Field(Task.CSI_E, description="csi-e, csi-ne, sv or osi")
    dataset: str | None = Field(None, description="dataset spec or folder (default: the study's dataset)")
    threshold: float | None = Field(None, description="override the stored SV/OSI threshold (score units)")
    label: str | None = Field(None, description="name of the system in results and reports (default: the model)")


class StudyConfig(BaseModel):
    """A study: what ``sec4sr run`` (flags or a TOML file) describes."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="a title for reports")
    model: str = Field("ge2e", description="backbone spec of the single system when 'systems' is empty")
    task: Task = Field(Task.CSI_E, description="task of the single system when 'systems' is empty")
    systems: list[SystemSpec] = Field(default_factory=list, description="the systems; empty = one from model/task")
    dataset: str = Field("embedded", description="dataset spec or a folder path")
    attacks: list[str] = Field(default_factory=list, description="attack specs or presets (columns)")
    defenses: list[str] = Field(default_factory=list, description="defense chain specs (rows; 'none' is implicit)")
    defense_order: Literal["sequential", "average"] = "sequential"
    settings: list[Setting] = Field(default_factory=lambda: ["non-adaptive"])
    eot: int = Field(1, ge=1, description="EOT draws when crafting adaptively against randomized defenses")
    targeted: bool = False
    seed: int = 0
    device: str = "cpu"
    limit: int | None = Field(None, ge=1, description="evaluate only the first N trials (seeded order)")
    batch_size: int = Field(16, ge=1, description="utterances per batch (the unit of resumption)")
    length_s: float = Field(DEFAULT_LENGTH_S, gt=0, description="every trial utterance is cropped/padded to this "
                                                                "length in seconds")
    enroll_length_s: float = Field(DEFAULT_LENGTH_S, gt=0, description="enrollment/threshold audio length in seconds")
    metrics: list[str] = Field(default_factory=lambda: ["linf", "l2", "snr", "pesq"])
    threshold: float | None = Field(None, description="override the stored SV/OSI threshold")
    out: Path = Path("sec4sr-out")
    save_audio: bool = True
    examples: int = Field(2, ge=0, description="utterances per cell whose defended audio is saved for the report")
    gradient_check: bool = Field(True, description="measure the input gradient of white-box cells (masking warning)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("cpu", "cuda") and not v.startswith("cuda:"):
            raise ValueError("device must be 'cpu' or 'cuda'")
        return v

    @field_validator("attacks", mode="before")
    @classmethod
    def _attacks(cls, v: Any) -> Any:
        return [_spec_text(a, "attack") for a in v] if isinstance(v, list) else v

    @field_validator("defenses", mode="before")
    @classmethod
    def _defenses(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        out = []
        for d in v:
            if isinstance(d, list):  # a chain given as a list of specs/tables
                out.append("+".join(_spec_text(p, "defense") for p in d))
            else:
                out.append(_spec_text(d, "defense"))
        return out

    @field_validator("settings")
    @classmethod
    def _settings(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one setting is needed")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _unique(self) -> "StudyConfig":
        if "none" in self.defenses:
            self.defenses = [d for d in self.defenses if d != "none"]
        if len(set(self.defenses)) != len(self.defenses):
            raise ValueError("a defense row is listed twice")
        if len(set(self.attacks)) != len(self.attacks):
            raise ValueError("an attack column is listed twice")
        keys = [(s.label or _default_label(s, self.dataset), s.task) for s in self.system_specs()]
        if len(set(keys)) != len(keys):
            raise ValueError("two systems have the same label and task; give them distinct 'label's")
        return self

    def system_specs(self) -> list[SystemSpec]:
        """The study's systems (the single model/task system when ``systems`` is empty)."""
        if self.systems:
            return list(self.systems)
        return [SystemSpec(model=self.model, task=self.task, threshold=self.threshold)]


def _default_label(spec: SystemSpec, study_dataset: str) -> str:
    if spec.dataset and spec.dataset != study_dataset:
        return f"{spec.model}@{spec.dataset}"
    return spec.model


def slug(text: str) -> str:
    """A readable, filesystem-safe form of a spec: ``qt:q=512+at:snr=30`` -> ``qt_q512+at_snr30``."""
    text = text.replace(":", "_").replace("=", "").replace(",", "_").replace("/", "-").replace("|", "~")
    return re.sub(r"[^A-Za-z0-9_.+~-]", "", text) or "x"


def resolve_dataset(spec: str) -> Dataset:
    """A dataset from its spec (``embedded``, ``folder:root=...``) or from a folder path."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return get_registry().build("dataset", ("folder", {"root": spec}))
    if ":" not in spec and (path.is_absolute() or spec.startswith((".", "~")) or "/" in spec or "\\" in spec):
        raise Sec4srError(f"dataset folder not found: {path}")
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


# --------------------------------------------------------------------------------------------------------------------
# Adversarially trained rows
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class RowSpec:
    """One defense row of a system: its label, the defenses in front of the model, and the model variant tag."""

    label: str
    defenses: list[Defense]
    variant: str | None = None  #: checkpoint tag of an adversarially trained backbone (None = the natural one)
    variant_defense: Defense | None = None
    rest: str = ""  #: the chain without the model-variant part (the "X" of AdvT+X)


def is_variant_class(cls: Any) -> bool:
    return bool(getattr(cls, "model_variant", False))


def build_row(chain: str) -> RowSpec:
    """Split a defense chain into its input defenses and (at most one) model-variant part such as ``advt``."""
    reg = get_registry()
    texts = [t.strip() for t in chain.split("+")]
    defenses: list[Defense] = []
    variant_def: Defense | None = None
    rest: list[str] = []
    for text in texts:
        d = reg.build("defense", text)
        if is_variant_class(type(d)):
            if variant_def is not None:
                raise ParameterError(f"defense row {chain!r} has two model-variant parts (e.g. two 'advt')")
            variant_def = d
        else:
            defenses.append(d)
            rest.append(text)
    if variant_def is None:
        return RowSpec(chain, defenses)
    rest_text = "+".join(rest)
    if not hasattr(variant_def, "variant_tag"):
        raise ParameterError(f"defense {variant_def.name!r} declares model_variant but has no variant_tag()")
    tag = str(variant_def.variant_tag(slug(rest_text) if rest_text else ""))
    return RowSpec(chain, defenses, tag, variant_def, rest_text)


def train_variant_for(row: RowSpec, model_spec: str, dataset_spec: str, device: str, seed: int) -> None:
    """Train the missing variant checkpoint of ``row``:
    ``sec4sr_core.training.train_variant(model_spec, dataset_spec, seed=..., device=..., **defense.training_options(rest))``
    (the model-variant defense says how it was trained: attack, in-loop defenses, ratio, EOT, epochs)."""
    import importlib

    try:  # through sys.modules (not the package attribute), so a replaced or absent module is honoured
        training = importlib.import_module(f"{__package__}.training")
    except ImportError:
        training = None
    fn = getattr(training, "train_variant", None)
    if fn is None:
        raise NotTrainedError(
            f"defense row {row.label!r} needs the adversarially trained variant {row.variant!r} of {model_spec!r}, "
            f"which is not in the model store, and this sec4sr has no sec4sr_core.training.train_variant to train it"
        )
    options_of = getattr(row.variant_defense, "training_options", None)
    options = dict(options_of(row.rest)) if callable(options_of) else {}
    from .audio import notice

    notice(f"training the {row.variant!r} variant of {model_spec!r} for defense row {row.label!r} "
           f"(stored in the model store; later studies reuse it)")
    fn(model_spec, dataset_spec, seed=seed, device=device, **options)


def variant_enrollment(model: SpeakerModel, dataset: Dataset, length_s: float, tag: str) -> Enrollment:
    """The enrollment of a variant backbone, cached under its own name (never the natural model's)."""
    path = home() / "systems" / f"{model.name}-{params_hash(model.params)}-{tag}-{dataset.name}-{dataset.fingerprint()}.pt"
    if path.exists():
        payload = read_torch_file(path)
        if isinstance(payload, dict) and payload.get("length_s") == length_s:
            return Enrollment.from_payload(payload)
    e = enroll(model, dataset, length_s)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({**e.to_payload(), "length_s": length_s}, tmp)
    tmp.replace(path)
    return e


# --------------------------------------------------------------------------------------------------------------------
# The study
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    defense: str
    attack: str
    setting: str
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Unit:
    """One unit of work: one batch of one cell, the grain at which rows are computed, shipped and committed.

    ``system`` indexes :meth:`StudyConfig.system_specs`; ``setting`` is ``benign``, ``non-adaptive`` or
    ``adaptive``; ``attack`` is ``""`` for benign units; ``defense`` is the row a benign or adaptive unit evaluates
    (``None`` for non-adaptive units, which craft once and evaluate every row); ``batch`` indexes
    :meth:`Study.batches`. A unit is plain data, so it travels to other processes by value; its random streams are
    seeded from the study seed and these fields, so it gives the same rows wherever it runs."""

    system: int
    setting: str
    attack: str
    defense: str | None
    batch: int

    def describe(self) -> str:
        row = "every row" if self.defense is None else repr(self.defense)
        what = "benign" if self.setting == "benign" else f"{self.attack!r} ({self.setting})"
        return f"system #{self.system} {what} on {row}, batch {self.batch}"


class Study:
    """One study run. ``Study(config).run()`` returns the JSON-able summary.

    The attributes ``model``, ``dataset``, ``system``, ``enrollment``, ``trials``, ``systems`` (row label ->
    DefendedSystem), ``system_label`` and ``targets`` describe the system being run (the first one until
    :meth:`run` moves through the others).
    """

    def __init__(self, config: StudyConfig, progress: bool = True, *, store: bool = True, system: int = 0,
                 root: str | Path | None = None) -> None:
        """``store=False`` builds a worker-side study that computes units but never opens the result store;
        ``system`` is the index of the system bound first; ``root`` is the folder relative output paths (audio)
        are written under (default: the current folder), while the rows keep the paths as configured."""
        self.config = config
        self.progress = progress
        self.root = None if root is None else Path(root)
        check_device(config.device)
        reg = get_registry()
        # validate every name before any work starts, so a typo fails fast
        self.knowledge: dict[str, str] = {}
        for a in config.attacks:
            cls, _, _ = reg.resolve("attack", a)
            self.knowledge[a] = Knowledge(cls.knowledge).value
        self.variant_rows: dict[str, bool] = {}
        for d in config.defenses:
            variant = False
            for part in parse_chain(d):
                cls, _, _ = reg.resolve("defense", part)
                variant = variant or is_variant_class(cls)
            self.variant_rows[d] = variant
        for m in config.metrics:
            reg.resolve("metric", m)
        for s in config.system_specs():
            reg.resolve("model", s.model)
        self.specs = config.system_specs()
        self.metrics = [reg.build("metric", m) for m in config.metrics]
        self.store: ResultStore | None = ResultStore(Path(config.out) / "results.sqlite") if store else None
        self.versions = versions()
        self._datasets: dict[str, Dataset] = {}
        if not 0 <= system < len(self.specs):
            raise ParameterError(f"the study has {len(self.specs)} system(s); there is no system #{system}")
        self.system_index = system
        self.bind(self.specs[system])

    # -- systems --------------------------------------------------------------------------------------------------
    def _dataset(self, spec: str) -> Dataset:
        if spec not in self._datasets:
            self._datasets[spec] = resolve_dataset(spec)
        return self._datasets[spec]

    def label_of(self, spec: SystemSpec) -> str:
        return spec.label or _default_label(spec, self.config.dataset)

    def bind(self, spec: SystemSpec) -> None:
        """Build (or rebuild) everything for one system of the study."""
        cfg = self.config
        self.spec = spec
        self.system_index = next((i for i, s in enumerate(self.specs) if s is spec), self.system_index)
        self.model = load_model(spec.model, cfg.device)
        self.dataset = self._dataset(spec.dataset or cfg.dataset)
        threshold = spec.threshold if spec.threshold is not None else cfg.threshold
        self.system, self.enrollment = build_system(self.model, spec.task, self.dataset, cfg.enroll_length_s, threshold)
        self.trials: Trials = task_trials(spec.task, self.dataset, self.system.speakers, cfg.seed, cfg.limit)
        self.system_label = self.label_of(spec)
        self.rows_spec: list[tuple[str, list[Defense]]] = [("none", [])]
        self.systems: dict[str, DefendedSystem] = {"none": DefendedSystem(self.system, [], cfg.defense_order)}
        self.row_variants: dict[str, str | None] = {"none": None}
        for d in cfg.defenses:
            row = build_row(d)
            base = self.system if row.variant is None else self._variant_system(spec, row, threshold)
            self.rows_spec.append((d, row.defenses))
            self.systems[d] = DefendedSystem(base, row.defenses, cfg.defense_order)
            self.row_variants[d] = row.variant
        self.targets = (
            choose_targets(self.trials.labels, [u.id for u in self.trials.utterances], self.system.task,
                           len(self.system.speakers), cfg.seed)
            if cfg.targeted else None
        )

    def _variant_system(self, spec: SystemSpec, row: RowSpec, threshold: float | None) -> SpeakerSystem:
        """The system of an adversarially trained row: the backbone's variant weights, enrolled the same way."""
        cfg = self.config
        model = get_registry().build("model", spec.model)
        try:
            load_checkpoint(model, home(), tag=row.variant or "")
        except NotTrainedError:
            train_variant_for(row, spec.model, spec.dataset or cfg.dataset, cfg.device, cfg.seed)
            try:
                load_checkpoint(model, home(), tag=row.variant or "")
            except NotTrainedError:
                raise Sec4srError(f"training stored no checkpoint tagged {row.variant!r} for defense row "
                                  f"{row.label!r}; the defense's variant_tag and the trainer disagree") from None
        model = model.eval().to(cfg.device)
        task = Task(spec.task)
        if model.output == "logits":
            return SpeakerSystem(model, task, model.class_ids or self.system.speakers)
        e = variant_enrollment(model, self.dataset, cfg.enroll_length_s, row.variant or "")
        th = threshold
        if th is None and task.has_threshold:
            th = e.thresholds.get("sv" if task == Task.SV else "osi")
        return SpeakerSystem(model, task, e.speakers, e.enrolled.to(model.device), th)

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
            "warnings": [],
        }

    def _todo(self, sl: slice, defense: str, attack: str, setting: str,
              cache: dict[tuple[str, str, str], set[str]] | None = None) -> bool:
        """Whether some utterance of batch ``sl`` has no stored row in the cell (``cache`` memoises done sets)."""
        key = (defense, attack, setting)
        if cache is None or key not in cache:
            done = self.store.done(self.system_label, self.system.task.value, defense, attack, setting)
            if cache is None:
                return any(u.id not in done for u in self.trials.utterances[sl])
            cache[key] = done
        return any(u.id not in cache[key] for u in self.trials.utterances[sl])

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
    def run(self, executor: Any = None) -> dict[str, Any]:
        """Run every unit of every system not already stored and return the summary.

        ``executor`` (default :class:`sec4sr_core.executors.LocalExecutor`, in-process) computes units; this
        driver binds each system first (enrollment and variant training happen here, once), then commits the
        rows each unit returns, one transaction per unit. See :mod:`sec4sr_core.executors`."""
        from .executors import LocalExecutor, UnitFailure

        if self.store is None:
            raise Sec4srError("this study was built without a result store (a worker's); it cannot run")
        executor = executor or LocalExecutor()
        cfg = self.config
        self.store.set_meta("config", cfg.model_dump(mode="json"))
        self.store.set_meta("versions", self.versions)
        self.store.set_meta("attacks", self.knowledge)
        self.store.set_meta("defense_rows", [{"label": "none", "variant": False}] + [
            {"label": d, "variant": self.variant_rows[d]} for d in cfg.defenses])
        enrollments = self.store.get_meta("enrollment", {}) or {}
        self.failed: list[tuple[Unit, str]] = []
        for n, spec in enumerate(self.specs):
            if n != self.system_index:
                self.bind(spec)
            if self.enrollment is not None:
                enrollments[f"{self.system_label}|{self.system.task.value}"] = {
                    "thresholds": self.enrollment.thresholds, "eer": self.enrollment.eer}
                self.store.set_meta("enrollment", enrollments)
            self._save_benign_examples()
            units = self.units()
            with self._bar(len(units), f"{self.system_label}") as bar:
                for unit, outcome in executor.map(self, units):
                    bar.update(1)
                    if isinstance(outcome, UnitFailure):  # retried by the executor, then given up: the rest goes on
                        self.store.add_failure(self.unit_cell(unit), outcome.error)
                        self.failed.append((unit, outcome.error))
                    else:
                        self._emit(outcome)
        summary = self.summary()
        self._study_warnings(summary)
        summary = self.summary()
        pm.hook.sec4sr_run_finished(summary=summary)
        return summary

    def units(self) -> list[Unit]:
        """The units of the bound system whose rows are not all stored yet, in the local executor's order:
        benign (row by row), then per attack column and setting, non-adaptive (every row at once) or adaptive
        (row by row), batch by batch."""
        sysi = self.system_index
        batches = list(self.batches())
        seen: dict[tuple[str, str, str], set[str]] = {}
        out: list[Unit] = []
        for label in self.systems:
            out += [Unit(sysi, "benign", "", label, bi) for bi, sl in batches
                    if self._todo(sl, label, "", "benign", seen)]
        for attack in self.config.attacks:
            for setting in self.config.settings:
                if setting == "non-adaptive":
                    out += [Unit(sysi, setting, attack, None, bi) for bi, sl in batches
                            if any(self._todo(sl, label, attack, setting, seen) for label in self.systems)]
                else:
                    out += [Unit(sysi, setting, attack, label, bi) for label in self.systems for bi, sl in batches
                            if self._todo(sl, label, attack, setting, seen)]
        return out

    def unit_cell(self, unit: Unit) -> dict[str, Any]:
        """The (system, task, defense, attack, setting) a unit belongs to, as the ``failures`` table records it."""
        spec = self.specs[unit.system]
        return {"system": self.label_of(spec), "task": Task(spec.task).value, "defense": unit.defense,
                "attack": unit.attack, "setting": unit.setting}

    def compute(self, unit: Unit) -> list[dict[str, Any]]:
        """The rows of one unit (binding its system first if needed); touches no result store. Audio files of the
        unit are written under the output folder, so they must be on storage the driver can read."""
        if unit.system != self.system_index:
            self.bind(self.specs[unit.system])
        batches = dict(self.batches())
        if unit.batch not in batches:
            raise ParameterError(f"unit {unit.describe()}: the study has {len(batches)} batches")
        sl = batches[unit.batch]
        bi = unit.batch
        x = self.load(sl)
        if unit.setting == "benign":
            label = unit.defense or "none"
            ds = self.systems[label]
            scores, dec = self._evaluate(ds, x, sl, batch_seed(self.config.seed, label, "benign", bi))
            rows = []
            for j, i in enumerate(range(sl.start, sl.stop)):
                r = self._base_row(i, label, "", "benign")
                r.update(decision=int(dec[j]), correct=int(dec[j] == r["label"]), success=None,
                         scores=scores[j].tolist(), queries=0, time_s=0.0, metrics={})
                rows.append(r)
            return rows
        attack = unit.attack
        if unit.setting == "non-adaptive":
            base = self.systems["none"]
            targets = list(self.systems.items())
            seed = batch_seed(self.config.seed, attack, "na", bi)
            grads = self._gradient_norms(attack, base, x, sl, seed)
            result, elapsed, eot = self._attack(attack, base, x, sl, seed)
            warns = reliability.row_warnings(x.shape[0], adaptive=False, randomized=base.randomized, eot=eot,
                                             grad_norms=grads)
            return self._adv_rows(attack, "non-adaptive", targets, "none", x, result.adv, result, elapsed, sl, bi,
                                  warns, grads)
        if unit.setting == "adaptive":
            label = unit.defense or "none"
            ds = self.systems[label]
            seed = batch_seed(self.config.seed, attack, "ad", label, bi)
            grads = self._gradient_norms(attack, ds, x, sl, seed)
            result, elapsed, eot = self._attack(attack, ds, x, sl, seed)
            warns = reliability.row_warnings(x.shape[0], adaptive=True, randomized=ds.randomized, eot=eot,
                                             grad_norms=grads)
            return self._adv_rows(attack, "adaptive", [(label, ds)], label, x, result.adv, result, elapsed, sl, bi,
                                  warns, grads)
        raise ParameterError(f"unknown setting {unit.setting!r} in unit {unit.describe()}")

    def _bar(self, total: int, desc: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, disable=not self.progress, leave=False, mininterval=1.0, unit="batch")

    def _attack(self, spec: str, ds: DefendedSystem, x: torch.Tensor, sl: slice, seed: int) -> tuple[Any, float, int]:
        from .oracle import make_oracle

        attack: Attack = get_registry().build("attack", spec)
        y = self._goal(sl)
        eot = self.config.eot if ds.randomized else 1
        oracle = make_oracle(ds, attack.knowledge, n=x.shape[0], claims=self.claims(sl), eot=eot, seed=seed)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        result = attack.run(oracle, x, y.to(x.device), targeted=self.targeted)
        return result, time.perf_counter() - t0, eot

    def _goal(self, sl: slice) -> torch.Tensor:
        return self.trials.labels[sl] if self.targets is None else self.targets[sl]

    @property
    def targeted(self) -> bool:
        return self.config.targeted

    def _prefix(self) -> Path:
        """Audio folder of the bound system (``<out>/audio``, plus ``<system>-<task>`` in multi-system studies)."""
        base = Path(self.config.out) / "audio"
        if len(self.specs) > 1:
            base = base / slug(f"{self.system_label}-{self.system.task.value}")
        return base

    def _audio_path(self, setting: str, attack: str, defense: str, i: int) -> Path:
        u = self.trials.utterances[i]
        parts = [setting, slug(attack)] + ([slug(defense)] if setting == "adaptive" else [])
        return self._prefix() / Path(*parts) / u.speaker / f"{Path(u.id).name}.wav"

    def _defended_path(self, setting: str, attack: str, defense: str, i: int) -> Path:
        u = self.trials.utterances[i]
        return self._prefix() / "defended" / setting / slug(attack) / slug(defense) / u.speaker / f"{Path(u.id).name}.wav"

    def _file(self, path: Path) -> Path:
        """Where ``path`` (as configured, maybe relative) is written: under :attr:`root` when one is set."""
        return path if self.root is None or path.is_absolute() else self.root / path

    def _benign_path(self, i: int) -> Path:
        u = self.trials.utterances[i]
        return self._prefix() / "benign" / u.speaker / f"{Path(u.id).name}.wav"

    def _save_benign_examples(self) -> None:
        k = min(self.config.examples, len(self.trials.utterances))
        if not (self.config.save_audio and k):
            return
        x = self.load(slice(0, k))
        for i in range(k):
            p = self._benign_path(i)
            if not self._file(p).exists():
                save_audio(self._file(p), x[i])

    @torch.no_grad()
    def _save_defended(self, setting: str, attack: str, label: str, ds: DefendedSystem, adv: torch.Tensor,
                       sl: slice, seed: int) -> None:
        """Save what the wave-level defenses of row ``label`` make of the first few adversarial examples."""
        k = min(self.config.examples - sl.start, sl.stop - sl.start)
        wave_defs = [d for d in ds.defenses if d.level == "wave"]
        if not self.config.save_audio or k <= 0 or not wave_defs or ds.order != "sequential":
            return
        ds.seed(seed)
        y = adv[:k]
        for d in wave_defs:
            y = d(y)
        for j in range(k):
            save_audio(self._file(self._defended_path(setting, attack, label, sl.start + j)), y[j].clamp(-1, 1))

    def _gradient_norms(self, attack: str, ds: DefendedSystem, x: torch.Tensor, sl: slice, seed: int):
        if not self.config.gradient_check or self.knowledge.get(attack) != Knowledge.WHITE_BOX.value:
            return None
        return reliability.input_gradient_norms(ds, x, self._goal(sl), self.targeted, self.claims(sl), seed)

    def _adv_rows(
        self, attack: str, setting: str, targets: list[tuple[str, DefendedSystem]], crafted_on: str,
        x: torch.Tensor, adv: torch.Tensor, result: Any, elapsed: float, sl: slice, bi: int,
        warnings: list[list[dict[str, str]]] | None = None, grad_norms: torch.Tensor | None = None,
    ) -> list[dict[str, Any]]:
        adv = quantize_16bit(adv.detach())
        n = x.shape[0]
        metric_values = {m.name: m.compute(x.cpu(), adv.cpu()) for m in self.metrics}
        paths: list[str | None] = [None] * n
        if self.config.save_audio:
            for j, i in enumerate(range(sl.start, sl.stop)):
                p = self._audio_path(setting, attack, crafted_on, i)
                save_audio(self._file(p), adv[j])
                paths[j] = str(p)
        rows = []
        for label, ds in targets:
            seed = batch_seed(self.config.seed, label, attack, setting, "eval", bi)
            scores, dec = self._evaluate(ds, adv, sl, seed)
            self._save_defended(setting, attack, label, ds, adv, sl, seed)
            for j, i in enumerate(range(sl.start, sl.stop)):
                r = self._base_row(i, label, attack, setting)
                goal = r["target"] if self.targeted else r["label"]
                ok = int(dec[j] == goal) if self.targeted else int(dec[j] != goal)
                extra = {} if grad_norms is None else {"grad_norm": float(grad_norms[j])}
                r.update(
                    decision=int(dec[j]), correct=int(dec[j] == r["label"]), success=ok,
                    scores=scores[j].tolist(), queries=int(result.queries[j]), time_s=elapsed / n,
                    metrics={**{k: v[j] for k, v in metric_values.items()}, **extra,
                             "attack_success": bool(result.success[j])},
                    audio_path=paths[j], warnings=list(warnings[j]) if warnings else [],
                )
                rows.append(r)
        return rows

    def _study_warnings(self, summary: dict[str, Any]) -> None:
        for key, codes in reliability.study_warnings(summary["results"], self.knowledge):
            self.store.add_warnings(
                "WHERE system=? AND task=? AND defense=? AND attack=? AND setting=?",
                (key["system"], key["task"], key["defense"], key["attack"], key["setting"]), codes,
            )

    # -- results --------------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return summarize(self.store, self.config)


def summarize(
    store: ResultStore, config: StudyConfig, system_label: str | None = None, enrollment: Any = None
) -> dict[str, Any]:
    """The JSON document of ``sec4sr run --json``: one entry per (system, defense, attack, setting) cell.

    ``benign`` (defense -> A_b), ``system`` and ``task`` describe the first system (or ``system_label``);
    ``systems`` lists every system with its benign accuracies and R1 per defense row."""
    defenses = ["none"] + list(config.defenses)
    knowledge = store.get_meta("attacks", {}) or {}
    enrollments = store.get_meta("enrollment", {}) or {}
    specs = config.system_specs()
    labelled = [(s.label or _default_label(s, config.dataset), Task(s.task).value) for s in specs]
    if system_label is not None:
        labelled = [x for x in labelled if x[0] == system_label] or [(system_label, Task(config.task).value)]
    results: list[dict[str, Any]] = []
    systems_doc = []
    for label, task in labelled:
        benign: dict[str, float | None] = {}
        for d in defenses:
            rows = store.rows("WHERE system=? AND task=? AND defense=? AND setting='benign'", (label, task, d))
            benign[d] = mean(r["correct"] for r in rows)
        r1s: dict[str, float | None] = {}
        for d in defenses:
            accs = []
            for a in config.attacks:
                for s in config.settings:
                    rows = store.rows(
                        "WHERE system=? AND task=? AND defense=? AND attack=? AND setting=?", (label, task, d, a, s)
                    )
                    agg = aggregate(rows)
                    warn_counts = reliability.count(rows)
                    messages = sorted({w["message"] for r in rows for w in (r["warnings"] or []) if isinstance(w, dict)})
                    results.append({
                        "system": label, "task": task, "defense": d, "attack": a, "setting": s,
                        "knowledge": knowledge.get(a),
                        "n": agg["n"],
                        "benign_accuracy": benign[d],
                        "adversarial_accuracy": agg["accuracy"],
                        "success_rate": agg["success_rate"],
                        "mean_queries": agg["mean_queries"],
                        "mean_time_s": agg["mean_time_s"],
                        "metrics": {k: v for k, v in agg["metrics"].items() if k != "attack_success"},
                        "warnings": warn_counts,
                        "warning_messages": messages,
                    })
                    if s == "non-adaptive":
                        accs.append(agg["accuracy"])
            r1s[d] = r1(benign[d], accs) if accs else None
        entry = {"system": label, "task": task, "benign": benign, "r1": r1s}
        if f"{label}|{task}" in enrollments:
            entry.update(enrollments[f"{label}|{task}"])
        systems_doc.append(entry)
    first = systems_doc[0]
    doc: dict[str, Any] = {
        "name": config.name,
        "system": first["system"], "task": first["task"], "dataset": config.dataset, "seed": config.seed,
        "targeted": config.targeted, "out": str(config.out), "benign": first["benign"], "r1": first["r1"],
        "systems": systems_doc, "results": results, "versions": store.get_meta("versions", {}),
        "failures": len(store.failures()),
    }
    if enrollment is not None:
        doc["thresholds"] = enrollment.thresholds
        doc["eer"] = enrollment.eer
    elif "thresholds" in first:
        doc["thresholds"] = first["thresholds"]
        doc["eer"] = first["eer"]
    return doc


def _num(v: Any) -> float | None:
    if v is None:
        return None
    return float(v)


def _mean(values: Sequence[Any]) -> float | None:
    return mean(values)


def format_table(summary: dict[str, Any]) -> str:
    """The readable results table per system: rows = defenses, columns = benign accuracy, accuracy under each
    attack (NA = non-adaptive, A = adaptive) and R1; then the reliability warnings."""
    out: list[str] = []
    systems = summary.get("systems") or [{"system": summary["system"], "task": summary["task"],
                                          "benign": summary["benign"], "r1": summary.get("r1", {})}]
    for sysdoc in systems:
        res = [r for r in summary["results"] if r.get("system", sysdoc["system"]) == sysdoc["system"]
               and r.get("task", sysdoc["task"]) == sysdoc["task"]]
        cols: list[tuple[str, str]] = []
        for r in res:
            key = (r["attack"], r["setting"])
            if key not in cols:
                cols.append(key)
        multi = len({s for _, s in cols}) > 1
        has_r1 = any(v is not None for v in (sysdoc.get("r1") or {}).values())
        headers = ["defense", "benign"] + [f"{a} ({'A' if s == 'adaptive' else 'NA'})" if multi else a for a, s in cols]
        headers += ["R1"] if has_r1 else []
        lines = []
        for d, acc in sysdoc["benign"].items():
            cells = [d, _pct(acc)]
            for a, s in cols:
                hit = next((r for r in res if r["defense"] == d and r["attack"] == a and r["setting"] == s), None)
                mark = "!" if hit and hit.get("warnings") else ""
                cells.append((_pct(hit["adversarial_accuracy"]) if hit else "-") + mark)
            if has_r1:
                cells.append(_pct((sysdoc.get("r1") or {}).get(d)))
            lines.append(cells)
        widths = [max(len(str(row[i])) for row in [headers] + lines) for i in range(len(headers))]
        fmt = "  ".join("{:<%d}" % widths[0] if i == 0 else "{:>%d}" % w for i, w in enumerate(widths))
        if out:
            out.append("")
        out += [f"system {sysdoc['system']}  task {sysdoc['task']}  dataset {summary['dataset']}  seed {summary['seed']}"
                + ("  targeted" if summary.get("targeted") else ""),
                "accuracy (%) — benign, and under each attack:", fmt.format(*headers),
                fmt.format(*["-" * w for w in widths])]
        out += [fmt.format(*row) for row in lines]
    flagged = [r for r in summary["results"] if r.get("warnings")]
    if flagged:
        out.append("")
        out.append("! reliability warnings:")
        for r in flagged:
            for msg in r.get("warning_messages") or sorted(r["warnings"]):
                out.append(f"  {r['defense']} / {r['attack']} ({r['setting']}): {msg}")
    return "\n".join(out)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"
