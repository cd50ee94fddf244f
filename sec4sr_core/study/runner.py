"""Running a study: systems × defense rows × attack columns × settings, resumably, into the result store.

A study is split into deterministic *batches* of each task's trials (a seeded order, then fixed-size chunks), and
every batch of every cell is atomic: its rows for every defense row are written in one transaction. A batch's random
streams are seeded from (study seed, cell, batch index), so a re-run, a resumed run and a run on another executor
produce the same rows. A batch whose rows are all stored is skipped, so killing a study at any moment (SIGKILL
included) and running it again completes it with no duplicated and no lost rows.

Every row carries the identity of what produced it (:mod:`sec4sr_core.study.rows`): a study whose configuration,
weights, enrollment or data changed computes new rows under new keys beside the old ones, tells the user in one line
which keys changed, and its tables count only its own rows.

Settings:

* ``non-adaptive``: craft once on the undefended system, evaluate the adversarial audio (as saved, 16-bit) on every
  defense row.
* ``adaptive``: craft on each defended system (BPDA for non-differentiable defenses is automatic; ``eot`` draws for
  randomized ones), evaluate on that same system.
* adversarially trained rows: a defense row whose chain contains a *model-variant* defense (``advt``; a
  :class:`sec4sr_core.sdk.ModelVariantDefense`) runs on the backbone's variant checkpoint (trained with
  :func:`sec4sr_core.study.training.train_variant` when missing) behind the rest of the chain (AdvT+X). Such rows take
  part in both settings like any other row.

Every crafted batch is checked for reliability problems (:mod:`sec4sr_core.study.reliability`); after the study, cells
are compared (black-box beating white-box, accuracy above benign) and the warnings merged into the rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import torch

from sec4sr_core.base.errors import NotTrainedError, ParameterError, Sec4srError
from sec4sr_core.base.params import parse_chain
from sec4sr_core.compose.enroll import Trials, build_system, task_trials
from sec4sr_core.compose.factories import check_device, load_model, resolve_dataset, slug, system_digest
from sec4sr_core.compose.targets import batch_seed, choose_targets
from sec4sr_core.plugins.manager import get_registry, pm, versions
from sec4sr_core.sdk.audio import load_batch, notice, save_audio, utterance_file
from sec4sr_core.sdk.interfaces import Dataset, Defense, Knowledge, Task
from sec4sr_core.sdk.modelstore import home, load_checkpoint
from sec4sr_core.sdk.system import DefendedSystem, SpeakerSystem
from sec4sr_core.study import reliability
from sec4sr_core.study.config import Setting, StudyConfig, SystemSpec, _default_label
from sec4sr_core.study.budget import over_budget, quantize_within
from sec4sr_core.study.certify import defended_or_smoothed
from sec4sr_core.study.craft import run_attack
from sec4sr_core.study.rows import ResultRow, batch_identity, canonical, changed_keys, digest, unit_key
from sec4sr_core.study.store import ResultStore
from sec4sr_core.study.summary import format_table, summarize
from sec4sr_core.study.units import LocalExecutor, Unit, UnitFailure
from sec4sr_core.study.variant_rows import RowSpec, build_row, is_variant_class, train_variant_for, variant_enrollment

__all__ = ["Setting", "Study", "StudyConfig", "SystemSpec", "Unit", "format_table", "study_id", "summarize"]

#: configuration fields that do not change any row (where output goes, what is kept beside the rows)
_NOT_IDENTITY = ("out", "name", "save_audio", "examples", "eot_check", "check_benchmark")


def study_id(config: StudyConfig) -> str:
    """The id of a study in its store: a digest of every configuration field that changes its rows."""
    return digest(identity_config(config), 12)


def identity_config(config: StudyConfig) -> dict[str, Any]:
    return {k: v for k, v in config.model_dump(mode="json").items() if k not in _NOT_IDENTITY}


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
        #: identities of the attack columns and metric set: every parameter, defaults included
        self.attack_ids = {a: canonical(atk.name, atk.params.model_dump(mode="json"))
                           for a, atk in ((a, reg.build("attack", a)) for a in config.attacks)}
        self.metric_ids = sorted((canonical(m.name, m.params.model_dump(mode="json")) for m in self.metrics),
                                 key=lambda c: c["name"])
        self.study_id = study_id(config)
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
            self.systems[d] = defended_or_smoothed(base, row.defenses, cfg.defense_order)  # `smooth`: majority vote
            self.row_variants[d] = row.variant
        self.targets = (
            choose_targets(self.trials.labels, [u.id for u in self.trials.utterances], self.system.task,
                           len(self.system.speakers), cfg.seed)
            if cfg.targeted else None
        )
        self._bind_identity()

    def _bind_identity(self) -> None:
        """The identities of the bound system, its defense rows and its batches (see :mod:`sec4sr_core.study.rows`)."""
        cfg = self.config
        model = self.model
        self.system_identity = {
            "label": self.system_label, "task": self.system.task.value,
            "model": canonical(model.name, model.params.model_dump(mode="json")),
            "state": system_digest(self.system),  # weights, speakers, enrolled embeddings, threshold
            "dataset": {"name": self.dataset.name, "fingerprint": self.dataset.fingerprint()},
            "enroll_length_s": cfg.enroll_length_s,
        }
        self.row_ids: dict[str, dict[str, Any]] = {}
        for label, ds in self.systems.items():
            self.row_ids[label] = {
                "label": label,  # the row's name in the store: another spelling is another row
                "chain": [canonical(d.name, d.params.model_dump(mode="json")) | {"level": d.level}
                          for d in ds.defenses],
                "order": cfg.defense_order if ds.defenses else None,  # no chain: nothing to order
                "variant": None if self.row_variants[label] is None
                else {"tag": self.row_variants[label], "state": system_digest(ds.system)},
            }
        self._batch_ids = {bi: batch_identity(bi, [self._trial(i) for i in range(sl.start, sl.stop)])
                           for bi, sl in self.batches()}
        self._cell_keys: dict[tuple[str, str, str], str] = {}

    def _trial(self, i: int) -> tuple[str, int, int | None, int | None]:
        claim = None if self.trials.claims is None else int(self.trials.claims[i])
        target = None if self.targets is None else int(self.targets[i])
        return (self.trials.utterances[i].id, int(self.trials.labels[i]), claim, target)

    def cell_identity(self, defense: str, attack: str, setting: str) -> dict[str, Any]:
        """Everything but the batch that changes the rows of one cell of the bound system."""
        cfg = self.config
        ident: dict[str, Any] = {
            "system": self.system_identity, "defense": self.row_ids[defense], "setting": setting,
            "seed": cfg.seed, "length_s": cfg.length_s,
        }
        if setting != "benign":
            crafted_on = self.systems["none" if setting == "non-adaptive" else defense]
            white = self.knowledge.get(attack) == Knowledge.WHITE_BOX.value
            ident.update(attack={"label": attack, **self.attack_ids[attack]}, targeted=cfg.targeted,
                         eot=cfg.eot if crafted_on.randomized else 1, metrics=self.metric_ids,
                         gradient_check=bool(cfg.gradient_check and white))
        return ident

    def cell_key(self, defense: str, attack: str, setting: str) -> str:
        key = (defense, attack, setting)
        if key not in self._cell_keys:
            self._cell_keys[key] = digest(self.cell_identity(defense, attack, setting))
        return self._cell_keys[key]

    def unit_key(self, defense: str, attack: str, setting: str, batch: int) -> str:
        """The key of the rows of one batch of one cell of the bound system."""
        return unit_key(self.cell_key(defense, attack, setting), self._batch_ids[batch])

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

    def _base_row(self, i: int, defense: str, attack: str, setting: str, batch: int, **values: Any) -> ResultRow:
        u = self.trials.utterances[i]
        _, label, claim, target = self._trial(i)
        return ResultRow(
            system=self.system_label, task=self.system.task.value, defense=defense, attack=attack, setting=setting,
            utterance=u.id, speaker=u.speaker, label=label, target=target, claim=claim,
            cell=self.cell_key(defense, attack, setting), unit=self.unit_key(defense, attack, setting, batch),
            seed=self.config.seed, versions=self.versions, **values,
        )

    @torch.no_grad()
    def _evaluate(self, ds: DefendedSystem, x: torch.Tensor, sl: slice, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        ds.seed(seed)
        scores = ds(x, claims=self.claims(sl))
        return scores.cpu(), ds.decide(scores).cpu()

    def _emit(self, rows: list[ResultRow]) -> None:
        self.store.add_rows(rows)
        for r in rows:
            pm.hook.sec4sr_result(row=r.as_dict())

    def record_failure(self, unit: Unit, error: str) -> None:
        """Record in the store that ``unit`` failed (its committed rows are kept)."""
        self.store.add_failure(self.unit_cell(unit), error, self.study_id)

    # -- the study ------------------------------------------------------------------------------------------------
    def run(self, executor: Any = None) -> dict[str, Any]:
        """Run every unit of every system not already stored and return the summary.

        ``executor`` (default :class:`sec4sr_core.study.executors.LocalExecutor`, in-process) computes units; this
        driver binds each system first (enrollment and variant training happen here, once), then commits the
        rows each unit returns, one transaction per unit. See :mod:`sec4sr_core.study.executors`."""
        if self.store is None:
            raise Sec4srError("this study was built without a result store (a worker's); it cannot run")
        executor = executor or LocalExecutor()
        cfg = self.config
        store, sid = self.store, self.study_id
        previous = store.begin_study(sid, cfg.model_dump(mode="json"), identity_config(cfg))
        if previous is not None:
            self._tell_changes(previous)
        defense_rows = [{"label": "none", "variant": False}] + [
            {"label": d, "variant": self.variant_rows[d]} for d in cfg.defenses]
        for key, value in (("config", cfg.model_dump(mode="json")), ("versions", self.versions),
                           ("attacks", self.knowledge), ("defense_rows", defense_rows), ("study", sid)):
            store.set_meta(key, value)  # the folder's latest study, for readers of one study
            if key != "study":
                store.set_study_meta(sid, key, value)
        store.set_meta("sweep", store.study_meta(sid, "sweep"))  # the folder's latest study is this one
        enrollments: dict[str, Any] = {}
        systems_seen = store.study_meta(sid, "systems", {}) or {}
        self.failed: list[tuple[Unit, str]] = []
        for n, spec in enumerate(self.specs):
            if n != self.system_index:
                self.bind(spec)
            key = f"{self.system_label}|{self.system.task.value}"
            ident = {"system": self.system_identity, "rows": self.row_ids}
            if key in systems_seen and systems_seen[key] != ident:
                notice(f"system {self.system_label!r} ({self.system.task.value}) changed since this study last ran "
                       f"({', '.join(changed_keys(systems_seen[key], ident))}); its rows are computed anew")
            systems_seen[key] = ident
            store.set_study_meta(sid, "systems", systems_seen)
            if self.enrollment is not None:
                enrollments[key] = {"thresholds": self.enrollment.thresholds, "eer": self.enrollment.eer}
                store.set_study_meta(sid, "enrollment", enrollments)
                store.set_meta("enrollment", enrollments)
            store.add_study_units(sid, self.study_units())
            self._save_benign_examples()
            units = self.units()
            with self._bar(len(units), f"{self.system_label}") as bar:
                for unit, outcome in executor.map(self, units):
                    bar.update(1)
                    if isinstance(outcome, UnitFailure):  # retried by the executor, then given up: the rest goes on
                        self.record_failure(unit, outcome.error)
                        self.failed.append((unit, outcome.error))
                    else:
                        self._emit(outcome)
            if cfg.eot_check:
                self._eot_check()
            if cfg.check_benchmark:
                self._benchmark_check()
        summary = self.summary()
        self._study_warnings(summary)
        summary = self.summary()
        pm.hook.sec4sr_run_finished(summary=summary)
        return summary

    def _tell_changes(self, previous: dict[str, Any]) -> None:
        """One line: the output folder holds another study, and which configuration keys differ from it."""
        keys = changed_keys(previous.get("identity") or {}, identity_config(self.config))
        what = ", ".join(keys) if keys else "its systems"
        notice(f"{self.config.out} holds results of another study ({previous['id']}); this one differs in {what} — "
               f"its rows are computed and counted on their own, the others are kept "
               f"(`sec4sr report {self.config.out}` shows every study)")

    def _cells(self) -> Iterator[tuple[str, str, str]]:
        """Every (defense, attack, setting) cell of the bound system."""
        for label in self.systems:
            yield label, "", "benign"
        for attack in self.config.attacks:
            for setting in self.config.settings:
                for label in self.systems:
                    yield label, attack, setting

    def study_units(self) -> list[tuple[str, str, str, str, str, str]]:
        """The unit keys (with their cells) the bound system contributes to the study."""
        sysl, task = self.system_label, self.system.task.value
        return [(self.unit_key(d, a, s, bi), sysl, task, d, a, s) for d, a, s in self._cells() for bi in self._batch_ids]

    def units(self) -> list[Unit]:
        """The units of the bound system whose rows are not all stored yet, in the local executor's order:
        benign (row by row), then per attack column and setting, non-adaptive (every row at once) or adaptive
        (row by row), batch by batch."""
        sysi = self.system_index
        batches = list(self.batches())
        done = self.store.done(k for k, *_ in self.study_units())

        def todo(sl: slice, defense: str, attack: str, setting: str, bi: int) -> bool:
            have = done.get(self.unit_key(defense, attack, setting, bi), set())
            return any(u.id not in have for u in self.trials.utterances[sl])

        out: list[Unit] = []
        for label in self.systems:
            out += [Unit(sysi, "benign", "", label, bi) for bi, sl in batches if todo(sl, label, "", "benign", bi)]
        for attack in self.config.attacks:
            for setting in self.config.settings:
                if setting == "non-adaptive":
                    out += [Unit(sysi, setting, attack, None, bi) for bi, sl in batches
                            if any(todo(sl, label, attack, setting, bi) for label in self.systems)]
                else:
                    out += [Unit(sysi, setting, attack, label, bi) for label in self.systems for bi, sl in batches
                            if todo(sl, label, attack, setting, bi)]
        return out

    def unit_cell(self, unit: Unit) -> dict[str, Any]:
        """The (system, task, defense, attack, setting) a unit belongs to, as the ``failures`` table records it."""
        spec = self.specs[unit.system]
        return {"system": self.label_of(spec), "task": Task(spec.task).value, "defense": unit.defense,
                "attack": unit.attack, "setting": unit.setting}

    def compute(self, unit: Unit) -> list[ResultRow]:
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
                rows.append(self._base_row(i, label, "", "benign", bi, decision=int(dec[j]),
                                           correct=int(dec[j] == self.trials.labels[i]), scores=scores[j].tolist()))
            return rows
        attack = unit.attack
        if unit.setting == "non-adaptive":
            base = self.systems["none"]
            targets = list(self.systems.items())
            seed = batch_seed(self.config.seed, attack, "na", bi)
            grads = self._gradient_norms(attack, base, x, sl, seed)
            result, elapsed, eot = self._attack(attack, base, x, sl, seed)
            warns = reliability.row_warnings(x.shape[0], adaptive=False, randomized=base.randomized, eot=eot,
                                             grad_norms=grads, bpda=not base.differentiable)
            return self._adv_rows(attack, "non-adaptive", targets, "none", x, result.adv, result, elapsed, sl, bi,
                                  warns, grads)
        if unit.setting == "adaptive":
            label = unit.defense or "none"
            ds = self.systems[label]
            seed = batch_seed(self.config.seed, attack, "ad", label, bi)
            grads = self._gradient_norms(attack, ds, x, sl, seed)
            result, elapsed, eot = self._attack(attack, ds, x, sl, seed)
            warns = reliability.row_warnings(x.shape[0], adaptive=True, randomized=ds.randomized, eot=eot,
                                             grad_norms=grads, bpda=not ds.differentiable)
            return self._adv_rows(attack, "adaptive", [(label, ds)], label, x, result.adv, result, elapsed, sl, bi,
                                  warns, grads)
        raise ParameterError(f"unknown setting {unit.setting!r} in unit {unit.describe()}")

    def _bar(self, total: int, desc: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, disable=not self.progress, leave=False, mininterval=1.0, unit="batch")

    def _attack(self, spec: str, ds: DefendedSystem, x: torch.Tensor, sl: slice, seed: int,
                eot: int | None = None) -> tuple[Any, float, int]:
        """Craft ``spec`` against ``ds`` on batch ``x``: (result, seconds, EOT draws used — ``eot`` or the
        study's for randomized systems, 1 otherwise)."""
        eot = eot if eot is not None else (self.config.eot if ds.randomized else 1)
        # UAP's held-out set (with its own SV claims) is provided there; a no-op for other attacks
        _, result, elapsed = run_attack(spec, ds, x, self._goal(sl), self.claims(sl), seed, eot, self.targeted,
                                        self.dataset, self.system.speakers)
        return result, elapsed, eot

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
        return self._prefix() / Path(*parts) / utterance_file(u)

    def _defended_path(self, setting: str, attack: str, defense: str, i: int) -> Path:
        u = self.trials.utterances[i]
        return self._prefix() / "defended" / setting / slug(attack) / slug(defense) / utterance_file(u)

    def _file(self, path: Path) -> Path:
        """Where ``path`` (as configured, maybe relative) is written: under :attr:`root` when one is set."""
        return path if self.root is None or path.is_absolute() else self.root / path

    def _benign_path(self, i: int) -> Path:
        u = self.trials.utterances[i]
        return self._prefix() / "benign" / utterance_file(u)

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

    def _row_metrics(self) -> list[Any]:
        """The configured metrics plus ``snr`` (dB) when not configured: every cell reports the SNR of its audio."""
        if not hasattr(self, "_metrics_with_snr"):
            extra = [] if any(m.name == "snr" for m in self.metrics) else [get_registry().build("metric", "snr")]
            self._metrics_with_snr = list(self.metrics) + extra
        return self._metrics_with_snr

    def _gradient_norms(self, attack: str, ds: DefendedSystem, x: torch.Tensor, sl: slice, seed: int):
        if not self.config.gradient_check or self.knowledge.get(attack) != Knowledge.WHITE_BOX.value:
            return None
        return reliability.input_gradient_norms(ds, x, self._goal(sl), self.targeted, self.claims(sl), seed)

    def _adv_rows(
        self, attack: str, setting: str, targets: list[tuple[str, DefendedSystem]], crafted_on: str,
        x: torch.Tensor, adv: torch.Tensor, result: Any, elapsed: float, sl: slice, bi: int,
        warnings: list[list[dict[str, str]]] | None = None, grad_norms: torch.Tensor | None = None,
    ) -> list[ResultRow]:
        budget = result.extra.get("declared_budget")
        adv = quantize_within(adv.detach(), x, budget)  # as saved, and inside the declared ball
        over = over_budget(adv, x, budget)
        if bool(over.any()):  # the attack itself left its ball (rounding toward x never does)
            warnings = [list(w) for w in (warnings or [[] for _ in range(x.shape[0])])]
            for j in torch.nonzero(over).flatten().tolist():
                warnings[j].append(reliability.warning("over-budget"))
        if self.knowledge.get(attack) == Knowledge.WHITE_BOX.value:
            # a white-box attack that left the audio unchanged saw no gradient: through BPDA, or a differentiable
            # system whose loss saturates (e.g. CE on PLDA scores of hundreds: softmax is exactly one-hot)
            # (through BPDA: the saved audio; otherwise the attack's own output, so a budget below one 16-bit step
            # is not mistaken for a masked gradient)
            bpda = not self.systems[crafted_on].differentiable
            code = "zero-bpda-gradient" if bpda else "gradient-masking"
            warnings = [list(w) for w in (warnings or [[] for _ in range(x.shape[0])])]
            failed = (~result.success.bool().cpu()).tolist()  # an utterance that met its goal untouched is no sign
            for j, zero in enumerate(reliability.zero_perturbation(adv if bpda else result.adv.to(x.device), x)):
                if zero and failed[j] and not any(w.get("code") == code for w in warnings[j]):
                    warnings[j].append(reliability.warning(code, "the saved perturbation is all zero"))
        n = x.shape[0]
        metric_values = {m.name: m.compute(x.cpu(), adv.cpu()) for m in self._row_metrics()}
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
                _, label_i, _, target_i = self._trial(i)
                goal = target_i if self.targeted else label_i
                ok = int(dec[j] == goal) if self.targeted else int(dec[j] != goal)
                extra = {} if grad_norms is None else {"grad_norm": float(grad_norms[j])}
                if budget is not None:  # the declared bound of this utterance (ε, radius or the SNR-derived one)
                    eps = budget[1]
                    extra[f"budget_{budget[0]}"] = (float(eps[j]) if isinstance(eps, torch.Tensor) and eps.dim()
                                                    else float(eps))
                rows.append(self._base_row(
                    i, label, attack, setting, bi,
                    decision=int(dec[j]), correct=int(dec[j] == label_i), success=ok,
                    scores=scores[j].tolist(), queries=int(result.queries[j]), time_s=elapsed / n,
                    metrics={**{k: v[j] for k, v in metric_values.items()}, **extra,
                             "attack_success": bool(result.success[j])},
                    audio_path=paths[j], warnings=list(warnings[j]) if warnings else [],
                ))
        return rows

    # -- opt-in strength checks ----------------------------------------------------------------------------------
    def _check_key(self, *parts: Any) -> str:
        return digest([self.system_identity, *parts])

    def _eot_check(self) -> None:
        """``eot_check``: re-craft the first batch of every adaptive cell on a randomized row with twice the EOT
        draws and flag the cell (``eot-not-converged``) when its accuracy on those trials leaves the cell's Wilson
        interval. One extra crafting per (attack, randomized row), on one batch; results cached in the store."""
        cfg = self.config
        if "adaptive" not in cfg.settings or not self.config.attacks:
            return
        done = self.store.study_meta(self.study_id, "eot_check", {}) or {}
        sl = next(iter(dict(self.batches()).values()), None)
        if sl is None:
            return
        x = None
        for attack in cfg.attacks:
            for label, ds in self.systems.items():
                if not ds.randomized:
                    continue
                unit = self.unit_key(label, attack, "adaptive", 0)
                key = self._check_key("eot", unit)
                if key not in done:
                    rows = {r["utterance"]: r for r in self.store.rows("WHERE unit=?", (unit,), study=self.study_id)}
                    ids = [u.id for u in self.trials.utterances[sl]]
                    if not all(i in rows for i in ids):
                        continue  # the cell's batch failed: nothing to compare
                    x = self.load(sl) if x is None else x
                    eot = 2 * (cfg.eot if ds.randomized else 1)
                    seed = batch_seed(cfg.seed, attack, "ad", label, 0)
                    result, _, _ = self._attack(attack, ds, x, sl, seed, eot=eot)
                    adv = quantize_within(result.adv.detach(), x, result.extra.get("declared_budget"))
                    _, dec = self._evaluate(ds, adv, sl, batch_seed(cfg.seed, label, attack, "adaptive", "eval", 0))
                    doubled = [int(dec[j] == self.trials.labels[i]) for j, i in enumerate(range(sl.start, sl.stop))]
                    original = [int(rows[i]["correct"]) for i in ids]
                    done[key] = {"attack": attack, "defense": label, "eot": eot // 2, "n": len(ids),
                                 "accuracy": sum(original) / len(ids), "accuracy_doubled": sum(doubled) / len(ids),
                                 "warning": reliability.eot_converged(original, doubled, eot // 2)}
                    self.store.set_study_meta(self.study_id, "eot_check", done)
                w = done[key]["warning"]
                if w:
                    self.store.add_warnings(
                        "WHERE system=? AND task=? AND defense=? AND attack=? AND setting='adaptive'",
                        (self.system_label, self.system.task.value, label, attack), {w["code"]: w["message"]},
                        study=self.study_id)

    def _benchmark_check(self) -> None:
        """``check_benchmark``: enroll a random-weights model of the same backbone (seeded by the study seed) the
        same way, evaluate it benign on the same trials, and flag the system (``benchmark-too-easy``, on its
        undefended benign rows) when it reaches the trained model's accuracy within the interval. Cached in the
        store per (system, trials)."""
        from sec4sr_core.compose.enroll import enroll

        cfg = self.config
        checks = self.store.study_meta(self.study_id, "benchmark_check", {}) or {}
        key = self._check_key("benchmark", [self._trial(i) for i in range(len(self.trials.utterances))],
                              cfg.length_s)
        if key not in checks:
            rows = self.store.rows("WHERE system=? AND task=? AND defense='none' AND setting='benign'",
                                   (self.system_label, self.system.task.value), study=self.study_id)
            by_id = {r["utterance"]: int(r["correct"]) for r in rows}
            ids = [u.id for u in self.trials.utterances]
            if not ids or not all(i in by_id for i in ids):
                return
            torch.manual_seed(cfg.seed)
            model = get_registry().build("model", self.spec.model).eval().to(cfg.device)  # no weights loaded
            if model.output == "logits":
                notice(f"check_benchmark: {self.spec.model} is a classifier; a random-weights classifier has no "
                       "speaker labels to compare, so the check is skipped")
                return
            e = enroll(model, self.dataset, cfg.enroll_length_s)
            th = self.system.threshold
            if self.system.task.has_threshold:
                th = e.thresholds.get("sv" if self.system.task == Task.SV else "osi", th)
            rand = DefendedSystem(SpeakerSystem(model, self.system.task, e.speakers, e.enrolled.to(model.device), th),
                                  [], cfg.defense_order)
            random_correct = []
            for bi, sl in self.batches():
                _, dec = self._evaluate(rand, self.load(sl), sl, batch_seed(cfg.seed, "none", "benign", bi))
                random_correct += [int(dec[j] == self.trials.labels[i]) for j, i in enumerate(range(sl.start, sl.stop))]
            trained = [by_id[i] for i in ids]
            checks[key] = {"system": self.system_label, "task": self.system.task.value, "model": self.spec.model,
                           "n": len(ids), "accuracy": sum(trained) / len(ids),
                           "random_accuracy": sum(random_correct) / len(ids),
                           "warning": reliability.benchmark_easy(trained, random_correct, self.spec.model)}
            self.store.set_study_meta(self.study_id, "benchmark_check", checks)
        w = checks[key]["warning"]
        if w:
            self.store.add_warnings("WHERE system=? AND task=? AND defense='none' AND setting='benign'",
                                    (self.system_label, self.system.task.value), {w["code"]: w["message"]},
                                    study=self.study_id)

    def _study_warnings(self, summary: dict[str, Any]) -> None:
        for key, codes in reliability.study_warnings(summary["results"], self.knowledge):
            self.store.add_warnings(
                "WHERE system=? AND task=? AND defense=? AND attack=? AND setting=?",
                (key["system"], key["task"], key["defense"], key["attack"], key["setting"]), codes,
                study=self.study_id,
            )

    # -- results --------------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        return summarize(self.store, self.config, study=self.study_id)
