"""The result store: one SQLite file per study output folder (``<out>/results.sqlite``).

One row per (system, task, defense, attack, setting, utterance) — a UNIQUE key — with the decision, scores,
success, metrics, queries, time, seed and the versions of sec4sr and of the plugin distributions. Rows are written
in transactions (``INSERT OR IGNORE``), so a study killed at any moment and run again completes with no duplicated
and no lost rows. Benign evaluations are rows with ``attack = ''`` and ``setting = 'benign'``.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    system TEXT NOT NULL,
    task TEXT NOT NULL,
    defense TEXT NOT NULL,
    attack TEXT NOT NULL,
    setting TEXT NOT NULL,
    utterance TEXT NOT NULL,
    speaker TEXT,
    label INTEGER,
    target INTEGER,
    claim INTEGER,
    decision INTEGER,
    correct INTEGER,
    success INTEGER,
    scores TEXT,
    queries INTEGER,
    time_s REAL,
    metrics TEXT,
    warnings TEXT,
    audio_path TEXT,
    seed INTEGER,
    versions TEXT,
    created REAL,
    UNIQUE (system, task, defense, attack, setting, utterance)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY, system TEXT, task TEXT, defense TEXT, attack TEXT, setting TEXT,
    error TEXT, created REAL
);
"""

KEY = ("system", "task", "defense", "attack", "setting", "utterance")
JSON_COLUMNS = ("scores", "metrics", "warnings", "versions")
COLUMNS = (
    "system", "task", "defense", "attack", "setting", "utterance", "speaker", "label", "target", "claim",
    "decision", "correct", "success", "scores", "queries", "time_s", "metrics", "warnings", "audio_path", "seed",
    "versions", "created",
)


def _json(value: Any) -> str:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value), sort_keys=True)


class ResultStore:
    """Thin, transactional access to ``results.sqlite``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), timeout=60)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(SCHEMA)
        self._migrate()
        self.conn.commit()

    def _migrate(self) -> None:
        """Add the columns of this schema that an older ``results.sqlite`` lacks (backward compatible)."""
        have = {r[1] for r in self.conn.execute("PRAGMA table_info(results)")}
        types = {"label": "INTEGER", "target": "INTEGER", "claim": "INTEGER", "decision": "INTEGER",
                 "correct": "INTEGER", "success": "INTEGER", "queries": "INTEGER", "time_s": "REAL", "seed": "INTEGER",
                 "created": "REAL"}
        for c in COLUMNS:
            if c not in have:
                self.conn.execute(f"ALTER TABLE results ADD COLUMN {c} {types.get(c, 'TEXT')}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- meta ---------------------------------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, _json(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- rows ---------------------------------------------------------------------------------------------------
    def done(self, system: str, task: str, defense: str, attack: str, setting: str) -> set[str]:
        """Utterance ids already stored for one cell."""
        cur = self.conn.execute(
            "SELECT utterance FROM results WHERE system=? AND task=? AND defense=? AND attack=? AND setting=?",
            (system, task, defense, attack, setting),
        )
        return {r[0] for r in cur}

    def add_rows(self, rows: Iterable[dict[str, Any]]) -> int:
        """Insert rows in one transaction; rows whose key exists are ignored. Returns the number inserted."""
        now = time.time()
        values = []
        for r in rows:
            r = {**r}
            r.setdefault("created", now)
            for c in JSON_COLUMNS:
                if c in r and not isinstance(r[c], str):
                    r[c] = _json(r[c])
            values.append(tuple(r.get(c) for c in COLUMNS))
        if not values:
            return 0
        with self.conn:
            before = self.conn.total_changes
            self.conn.executemany(
                f"INSERT OR IGNORE INTO results ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                values,
            )
            return self.conn.total_changes - before

    def add_failure(self, cell: dict[str, Any], error: str) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT INTO failures(system, task, defense, attack, setting, error, created) VALUES (?,?,?,?,?,?,?)",
                (cell.get("system"), cell.get("task"), cell.get("defense"), cell.get("attack"), cell.get("setting"),
                 error, time.time()),
            )

    def rows(self, where: str = "", params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.conn.execute(f"SELECT {', '.join(COLUMNS)} FROM results {where} ORDER BY id", tuple(params))
        out = []
        for rec in cur:
            d = dict(zip(COLUMNS, rec))
            for c in JSON_COLUMNS:
                if d[c] is not None:
                    d[c] = json.loads(d[c])
            out.append(d)
        return out

    def add_warnings(self, where: str, params: Sequence[Any], codes: dict[str, str]) -> int:
        """Merge warning ``codes`` (code -> message) into the ``warnings`` of the rows matching ``where``, in one
        transaction; idempotent. Returns the number of rows changed."""
        changed = 0
        with self.conn:
            cur = self.conn.execute(f"SELECT id, warnings FROM results {where}", tuple(params))
            for rid, raw in cur.fetchall():
                current = json.loads(raw) if raw else []
                seen = {w.get("code") for w in current if isinstance(w, dict)}
                new = [{"code": c, "message": m} for c, m in codes.items() if c not in seen]
                if new:
                    self.conn.execute("UPDATE results SET warnings=? WHERE id=?", (_json(current + new), rid))
                    changed += 1
        return changed

    def cells(self) -> list[dict[str, Any]]:
        """Every (system, task, defense, attack, setting) present, in insertion order, with its row count."""
        cur = self.conn.execute(
            "SELECT system, task, defense, attack, setting, COUNT(*) FROM results "
            "GROUP BY system, task, defense, attack, setting ORDER BY MIN(id)"
        )
        keys = ("system", "task", "defense", "attack", "setting", "n")
        return [dict(zip(keys, r)) for r in cur]

    def failures(self) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT system, task, defense, attack, setting, error, created FROM failures ORDER BY id")
        keys = ("system", "task", "defense", "attack", "setting", "error", "created")
        return [dict(zip(keys, r)) for r in cur]

    def count(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    def summary(self) -> list[dict[str, Any]]:
        """Per (system, task, defense, attack, setting): n, accuracy, success rate, mean queries."""
        cur = self.conn.execute(
            "SELECT system, task, defense, attack, setting, COUNT(*), AVG(correct), AVG(success), AVG(queries) "
            "FROM results GROUP BY system, task, defense, attack, setting ORDER BY MIN(id)"
        )
        keys = ("system", "task", "defense", "attack", "setting", "n", "accuracy", "success_rate", "queries")
        return [dict(zip(keys, r)) for r in cur]
