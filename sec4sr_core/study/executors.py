"""Executors: who computes a study's units (one batch of one cell each) — this process, or a Ray cluster.

The driver (:meth:`sec4sr_core.study.runner.Study.run`) owns everything stateful: it binds each system (loading the
backbone, enrolling it or reading its enrollment from the model store, training adversarially trained variants),
lists the units whose rows are not stored yet, and commits the rows each unit returns in one transaction
(``INSERT OR IGNORE``). An executor only turns units into rows:

* :class:`LocalExecutor` (the default) calls :meth:`Study.compute` in-process, in order. An exception is recorded in
  the ``failures`` table and raised, as before there were executors.
* :class:`RayExecutor` runs :func:`run_unit` as Ray tasks (one GPU per task when the study's device is CUDA, else
  ``cpus_per_task`` CPUs). What travels, and how:

  - by value (Ray's object store, put once): the study config as JSON, the model store path (``$SEC4SR_HOME``) and
    the driver's working folder; each task's :class:`~sec4sr_core.study.runner.Unit` (five small fields);
  - by path, on storage shared by every node at the same path: the model store (weights, enrollments, variant
    checkpoints — written by the driver before any task starts, only read by workers), folder datasets, and the
    output folder (workers write the unit's adversarial/defended audio there; the driver alone writes
    ``results.sqlite``). The embedded corpus ships inside the installed package on every node.

  A worker process keeps the study it built for a (config, system) pair, so only its first unit pays for loading
  the model and reading the enrollment. A task whose worker dies (killed, OOM) is re-run by Ray up to ``retries``
  times; a task that raises is re-run up to ``retries`` times too (``retry_exceptions``), then recorded as failed
  with its error while the rest of the study goes on. A unit's rows reach the store only when the driver receives
  them whole, and rows are keyed on (system, task, defense, attack, setting, utterance), so a redone unit never
  duplicates rows. Ctrl-C on the driver cancels the outstanding tasks and keeps every committed row; running the
  same command again — with either executor — resumes.

Because every unit seeds its random streams from (study seed, cell, batch), the rows do not depend on the executor,
the worker or the order in which units finish.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Any, Iterable, Iterator

from sec4sr_core.base.errors import ParameterError, Sec4srError
from sec4sr_core.study.runner import Study, StudyConfig
from sec4sr_core.study.units import LocalExecutor, Unit, UnitFailure

__all__ = ["LocalExecutor", "RayExecutor", "UnitFailure", "make_executor", "run_unit"]

INSTALL_HINT = 'the Ray executor needs Ray, which is not installed: pip install "sec4sr[ray]"'


# --------------------------------------------------------------------------------------------------------------------
# Ray
# --------------------------------------------------------------------------------------------------------------------

_WORKER_STUDIES: dict[str, Any] = {}


def run_unit(payload: dict[str, Any], unit: dict[str, Any]) -> list[Any]:
    """The body of one Ray task: the rows of ``unit`` (a :class:`Unit` as a dict) of the study in ``payload``.

    Runs in a worker process; reads the model store and datasets, writes the unit's audio under the output folder,
    never touches ``results.sqlite``. The study object is cached per (payload, system) for the worker's next units.
    """
    import torch

    u = Unit(**unit)
    if payload.get("home"):
        os.environ["SEC4SR_HOME"] = payload["home"]
    torch.set_num_threads(max(1, int(payload.get("threads", 1))))
    key = json.dumps({"payload": payload, "system": u.system}, sort_keys=True, default=str)
    study = _WORKER_STUDIES.get(key)
    if study is None:
        config = StudyConfig(**payload["config"])
        study = Study(config, progress=False, store=False, system=u.system, root=payload.get("root"))
        _WORKER_STUDIES.clear()  # one study per worker process at a time: models are large
        _WORKER_STUDIES[key] = study
    return study.compute(u)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise Sec4srError(INSTALL_HINT) from None
    return ray


class RayExecutor:
    """Units as Ray tasks on a cluster (``address``: ``HOST:PORT`` of the head, or ``auto``) or on a local Ray
    instance started here (``address=None``). An already initialised Ray (``ray.init`` by the caller) is used as is.

    ``retries``: re-runs of a task whose worker died or which raised, before it is recorded as failed (≥ 0).
    ``cpus_per_task``: CPU cores requested by each task (and torch threads in it) when the study runs on CPU.
    ``max_in_flight``: tasks submitted at once (bounds driver memory on very large studies)."""

    name = "ray"

    def __init__(self, address: str | None = None, retries: int = 2, cpus_per_task: int = 1,
                 max_in_flight: int = 1000) -> None:
        if retries < 0:
            raise ParameterError("--retries must be ≥ 0")
        if cpus_per_task < 1:
            raise ParameterError("cpus_per_task must be ≥ 1")
        if max_in_flight < 1:
            raise ParameterError("max_in_flight must be ≥ 1")
        self.ray = _import_ray()
        self.address = address
        self.retries = retries
        self.cpus_per_task = cpus_per_task
        self.max_in_flight = max_in_flight
        self._started = False

    def _init(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        from sec4sr_core.sdk.modelstore import home

        os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
        try:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     logging_level="WARNING", runtime_env={"env_vars": {"SEC4SR_HOME": str(home())}})
        except ConnectionError as exc:
            raise Sec4srError(f"cannot reach the Ray cluster at {self.address!r}: {exc}") from None
        self._started = True

    def map(self, study: Study, units: Iterable[Unit]) -> Iterator[tuple[Unit, Any]]:
        ray = self.ray
        units = list(units)
        if not units:
            return
        self._init()
        from sec4sr_core.sdk.modelstore import home

        gpu = study.config.device.startswith("cuda")
        options: dict[str, Any] = {"max_retries": self.retries, "retry_exceptions": self.retries > 0,
                                   "num_cpus": 1 if gpu else self.cpus_per_task}
        if gpu:
            options["num_gpus"] = 1
        task = ray.remote(run_unit).options(**options)
        payload = ray.put({"config": study.config.model_dump(mode="json"), "home": str(home()),
                           "root": os.getcwd(), "threads": self.cpus_per_task})
        todo = iter(units)
        pending: dict[Any, Unit] = {}

        def submit() -> None:
            for unit in todo:
                pending[task.remote(payload, asdict(unit))] = unit
                if len(pending) >= self.max_in_flight:
                    return

        try:
            submit()
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    unit = pending.pop(ref)
                    try:
                        outcome: Any = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        outcome = UnitFailure(_error_line(exc))
                    yield unit, outcome
                submit()
        except BaseException:  # Ctrl-C (or the driver failing): stop the cluster's work, keep committed rows
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - already finished or gone
                    pass
            raise

    def close(self) -> None:
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
        self._started = False


def _error_line(exc: BaseException) -> str:
    """``Type: message`` of the application error inside a Ray error (or of the Ray error itself), one line."""
    cause = getattr(exc, "cause", None)
    err = cause if isinstance(cause, BaseException) else exc
    text = str(err).strip().splitlines()
    msg = text[-1] if text and cause is not None else (text[0] if text else "")
    return f"{type(err).__name__}: {msg}".strip()


def make_executor(name: str, address: str | None = None, retries: int = 2) -> LocalExecutor | RayExecutor:
    """The executor named on the command line (``local`` or ``ray``)."""
    if name == "local":
        if address is not None:
            raise ParameterError("--address is for --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address=address, retries=retries)
    raise ParameterError(f"unknown executor {name!r}; choose 'local' or 'ray'")
