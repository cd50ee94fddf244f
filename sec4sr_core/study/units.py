"""Units of work: one batch of one cell, the grain at which rows are computed, shipped and committed — and the
in-process executor. Torch-free plain data, so units travel to other processes by value."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator

if TYPE_CHECKING:  # pragma: no cover
    from sec4sr_core.study.runner import Study


@dataclass(frozen=True)
class Unit:
    """One unit of work.

    ``system`` indexes :meth:`StudyConfig.system_specs`; ``setting`` is ``benign``, ``non-adaptive`` or
    ``adaptive``; ``attack`` is ``""`` for benign units; ``defense`` is the row a benign or adaptive unit evaluates
    (``None`` for non-adaptive units, which craft once and evaluate every row); ``batch`` indexes
    :meth:`Study.batches`. Its random streams are seeded from the study seed and these fields, so it gives the same
    rows wherever it runs."""

    system: int
    setting: str
    attack: str
    defense: str | None
    batch: int

    def describe(self) -> str:
        row = "every row" if self.defense is None else repr(self.defense)
        what = "benign" if self.setting == "benign" else f"{self.attack!r} ({self.setting})"
        return f"system #{self.system} {what} on {row}, batch {self.batch}"


@dataclass(frozen=True)
class UnitFailure:
    """A unit given up on after its retries: the error as one line ``Type: message``."""

    error: str


class LocalExecutor:
    """Units computed in this process, one after the other (the default; a study's behaviour on one machine)."""

    name = "local"

    def map(self, study: "Study", units: Iterable[Unit]) -> Iterator[tuple[Unit, Any]]:
        for unit in units:
            try:
                rows = study.compute(unit)
            except Exception as exc:  # recorded for the report, then raised: committed rows are kept
                study.record_failure(unit, f"{type(exc).__name__}: {exc}")
                raise
            yield unit, rows

    def close(self) -> None:
        pass
