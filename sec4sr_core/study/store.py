"""The result store: one SQLite file per output folder (``<out>/results.sqlite``), holding any number of studies.

``results`` holds one row per (unit, utterance) — a UNIQUE key, where ``unit`` fingerprints everything that changes
the row's value (:mod:`sec4sr_core.study.rows`) — with the decision, scores, success, metrics, queries, time, seed
and versions. ``studies`` records each study run into the folder (its configuration, identity and per-study meta),
``study_units`` which units (hence rows) belong to it. Rows are written in transactions (``INSERT OR IGNORE``), so a
study killed at any moment and run again completes with no duplicated and no lost rows; a study with a changed
configuration computes its own rows beside the others' and counts only its own. Benign evaluations are rows with
``attack = ''`` and ``setting = 'benign'``.

A store written before rows had identities (schema 1) is migrated on open: its rows become the study ``v1``.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from sec4sr_core.base.errors import Sec4srError

SCHEMA_VERSION = 2

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
    cell TEXT NOT NULL,
    unit TEXT NOT NULL,
    UNIQUE (unit, utterance)
);
CREATE INDEX IF NOT EXISTS results_cell ON results (system, task, defense, attack, setting);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS studies (
    id TEXT PRIMARY KEY, name TEXT, config TEXT, identity TEXT, meta TEXT, created REAL, updated REAL, seq INTEGER
);
CREATE TABLE IF NOT EXISTS study_units (
    study TEXT NOT NULL, unit TEXT NOT NULL, system TEXT, task TEXT, defense TEXT, attack TEXT, setting TEXT,
    PRIMARY KEY (study, unit)
);
CREATE INDEX IF NOT EXISTS study_units_unit ON study_units (unit);
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY, system TEXT, task TEXT, defense TEXT, attack TEXT, setting TEXT,
    error TEXT, created REAL, study TEXT
);
"""

KEY = ("unit", "utterance")
CELL = ("system", "task", "defense", "attack", "setting")
JSON_COLUMNS = ("scores", "metrics", "warnings", "versions")
COLUMNS = (
    "system", "task", "defense", "attack", "setting", "utterance", "speaker", "label", "target", "claim",
    "decision", "correct", "success", "scores", "queries", "time_s", "metrics", "warnings", "audio_path", "seed",
    "versions", "created", "cell", "unit",
)
_V1_COLUMNS = COLUMNS[:-2]
#: the study a schema-1 store's rows are migrated into
LEGACY_STUDY = "v1"


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


class StoreError(Sec4srError):
    """An output folder or ``results.sqlite`` that cannot hold results (printed as one ``error:`` line, exit 2)."""


class ResultStore:
    """Thin, transactional access to ``results.sqlite``.

    Row queries take an optional ``study`` id: then only the rows of that study's units are seen."""

    def __init__(self, path: str | Path) -> None:
        """Open (creating folder and file if needed) the store at ``path``. A path that cannot hold a store — a file
        where the folder should be, a folder or a non-SQLite file as ``results.sqlite``, a read-only or locked
        store — raises :class:`StoreError` naming the path and the fix; nothing in an existing store is changed."""
        self.path = Path(path)
        self.conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            blocker = next((p for p in [self.path.parent, *self.path.parent.parents] if p.exists() and not p.is_dir()),
                           self.path.parent)
            raise StoreError(f"cannot create the output folder {self.path.parent}: {blocker} is a file; "
                             f"give an output folder (--out) that is a folder or does not exist yet") from None
        except OSError as exc:
            raise StoreError(f"cannot create the output folder {self.path.parent}: {exc.strerror or exc}; "
                             f"give a writable output folder (--out)") from None
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder, not a result store; remove it or give another output "
                             f"folder (--out)")
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=60)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            with self.conn:
                legacy = self._legacy_results()
                if legacy:
                    self.conn.execute("ALTER TABLE results RENAME TO results_v1")
                self.conn.executescript(SCHEMA)
                if legacy:
                    self._migrate_v1()
                self._migrate_columns()
                self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema', ?)",
                                  (str(SCHEMA_VERSION),))
        except sqlite3.Error as exc:
            if self.conn is not None:
                self.conn.close()
            text = str(exc)
            low = text.lower()
            if "not a database" in low or "malformed" in low or "corrupt" in low:
                fix = ("it is not a readable SQLite result store (damaged or another kind of file); move it away "
                       "(nothing is read from it) or give another output folder (--out)")
            elif "readonly" in low or "read-only" in low:
                fix = (f"it is read-only; make it and its folder writable (chmod u+w {self.path} "
                       f"{self.path.parent}) or give another output folder (--out)")
            elif "locked" in low or "busy" in low:
                fix = "another process has held it locked for 60 s; wait for that run to end, or give another --out"
            elif "unable to open" in low:
                fix = f"it cannot be opened or created; check that {self.path.parent} is a writable folder"
            else:
                fix = "give another output folder (--out), or move the file away"
            raise StoreError(f"result store {self.path}: {text} — {fix}") from None

    # -- schema -------------------------------------------------------------------------------------------------
    def _legacy_results(self) -> bool:
        """Whether ``results`` is a schema-1 table (keyed on the cell and utterance, no row identity)."""
        have = {r[1] for r in self.conn.execute("PRAGMA table_info(results)")}
        return bool(have) and "unit" not in have

    def _migrate_v1(self) -> None:
        """Schema-1 rows become the study ``v1``: one unit per cell (their configuration is the stored one)."""
        from sec4sr_core.study.rows import digest

        have = [r[1] for r in self.conn.execute("PRAGMA table_info(results_v1)")]
        cols = [c for c in _V1_COLUMNS if c in have]
        units: dict[tuple, str] = {}
        for rec in self.conn.execute(f"SELECT {', '.join(cols)} FROM results_v1 ORDER BY id").fetchall():
            row = dict(zip(cols, rec))
            cell = tuple(row[c] for c in CELL)
            key = units.setdefault(cell, "v1-" + digest(list(cell)))
            row.update(cell=key, unit=key)
            self.conn.execute(f"INSERT OR IGNORE INTO results ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                              tuple(row.values()))
        self.conn.execute("DROP TABLE results_v1")
        meta = {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}
        now = time.time()
        self.conn.execute(
            "INSERT OR REPLACE INTO studies(id, name, config, identity, meta, created, updated, seq) VALUES (?,?,?,?,?,?,?,?)",
            (LEGACY_STUDY, (meta.get("config") or {}).get("name"), _json(meta.get("config")), _json({}),
             _json({k: meta[k] for k in ("attacks", "enrollment", "defense_rows", "sweep", "versions") if k in meta}),
             now, now, 0))
        self.conn.executemany(
            "INSERT OR IGNORE INTO study_units(study, unit, system, task, defense, attack, setting) VALUES (?,?,?,?,?,?,?)",
            [(LEGACY_STUDY, key, *cell) for cell, key in units.items()])
        fail_cols = {r[1] for r in self.conn.execute("PRAGMA table_info(failures)")}
        if "study" in fail_cols:
            self.conn.execute("UPDATE failures SET study=? WHERE study IS NULL", (LEGACY_STUDY,))

    def _migrate_columns(self) -> None:
        fail_cols = {r[1] for r in self.conn.execute("PRAGMA table_info(failures)")}
        if "study" not in fail_cols:
            self.conn.execute("ALTER TABLE failures ADD COLUMN study TEXT")
            self.conn.execute("UPDATE failures SET study=?", (LEGACY_STUDY,))

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- meta ---------------------------------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        """Folder-level meta (the configuration of the study run last, its versions ...)."""
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, _json(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- studies ------------------------------------------------------------------------------------------------
    def begin_study(self, study: str, config: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any] | None:
        """Record a study run (its configuration and identity) as the folder's latest, forgetting the units an
        earlier run of the same study counted (:meth:`add_study_units` records this run's). Returns the study run
        last before this one when it is another study (to tell the user what changed), else None."""
        now = time.time()
        with self.conn:
            last = self.conn.execute(
                "SELECT id, identity FROM studies ORDER BY seq DESC, updated DESC LIMIT 1").fetchone()
            seq = int(self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM studies").fetchone()[0]) + 1
            if self.conn.execute("SELECT 1 FROM studies WHERE id=?", (study,)).fetchone():
                self.conn.execute("UPDATE studies SET name=?, config=?, identity=?, updated=?, seq=? WHERE id=?",
                                  (config.get("name"), _json(config), _json(identity), now, seq, study))
            else:
                self.conn.execute(
                    "INSERT INTO studies(id, name, config, identity, meta, created, updated, seq) VALUES (?,?,?,?,?,?,?,?)",
                    (study, config.get("name"), _json(config), _json(identity), _json({}), now, now, seq))
            self.conn.execute("DELETE FROM study_units WHERE study=?", (study,))
        if last is None or last[0] == study:
            return None
        return {"id": last[0], "identity": json.loads(last[1]) if last[1] else {}}

    def add_study_units(self, study: str, units: Iterable[tuple[str, str, str, str, str, str]]) -> None:
        """Count units ``(unit, system, task, defense, attack, setting)`` (and so their rows) in ``study``."""
        with self.conn:
            self.conn.executemany(
                "INSERT OR IGNORE INTO study_units(study, unit, system, task, defense, attack, setting) "
                "VALUES (?,?,?,?,?,?,?)", [(study, *u) for u in units])

    def set_study_meta(self, study: str, key: str, value: Any) -> None:
        with self.conn:
            row = self.conn.execute("SELECT meta FROM studies WHERE id=?", (study,)).fetchone()
            meta = json.loads(row[0]) if row and row[0] else {}
            meta[key] = json.loads(_json(value))
            self.conn.execute("UPDATE studies SET meta=? WHERE id=?", (_json(meta), study))

    def study_meta(self, study: str, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT meta FROM studies WHERE id=?", (study,)).fetchone()
        meta = json.loads(row[0]) if row and row[0] else {}
        return meta.get(key, default)

    def study_value(self, study: str | None, key: str, default: Any = None) -> Any:
        """``key`` of ``study``'s meta; for the folder's latest study (or ``study=None``) the folder-level meta stands
        in when the study has none (stores written before per-study meta)."""
        value = self.study_meta(study, key) if study else None
        if value is None and study in (None, self.latest_study()):
            value = self.get_meta(key)
        return default if value is None else value

    def studies(self) -> list[dict[str, Any]]:
        """Every study of the folder, in the order they were last run (oldest first)."""
        cur = self.conn.execute("SELECT id, name, config, identity, created, updated FROM studies ORDER BY seq, updated")
        out = []
        for sid, name, config, identity, created, updated in cur:
            n = self.conn.execute(
                "SELECT COUNT(*) FROM results WHERE unit IN (SELECT unit FROM study_units WHERE study=?)",
                (sid,)).fetchone()[0]
            out.append({"id": sid, "name": name, "config": json.loads(config) if config else None,
                        "identity": json.loads(identity) if identity else {}, "created": created,
                        "updated": updated, "rows": int(n)})
        return out

    def latest_study(self) -> str | None:
        row = self.conn.execute("SELECT id FROM studies ORDER BY seq DESC, updated DESC LIMIT 1").fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _scope(where: str, params: Sequence[Any], study: str | None) -> tuple[str, tuple[Any, ...]]:
        """``where`` restricted to the rows of ``study`` (when given)."""
        if study is None:
            return where, tuple(params)
        clause = "unit IN (SELECT unit FROM study_units WHERE study=?)"
        body = where.strip()
        if body.upper().startswith("WHERE"):
            return f"WHERE {clause} AND ({body[5:]})", (study, *params)
        return f"WHERE {clause} {body}", (study, *params)

    # -- rows ---------------------------------------------------------------------------------------------------
    def done(self, units: Iterable[str]) -> dict[str, set[str]]:
        """Utterance ids already stored, per unit key, for the given unit keys (absent keys: nothing stored)."""
        keys = list(dict.fromkeys(units))
        out: dict[str, set[str]] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            cur = self.conn.execute(
                f"SELECT unit, utterance FROM results WHERE unit IN ({', '.join('?' * len(chunk))})", chunk)
            for unit, utt in cur:
                out.setdefault(unit, set()).add(utt)
        return out

    def add_rows(self, rows: Iterable[Any]) -> int:
        """Insert rows (:class:`~sec4sr_core.study.rows.ResultRow` or mappings with its fields) in one transaction;
        rows whose (unit, utterance) exists are ignored, never overwritten. Returns the number inserted."""
        now = time.time()
        values = []
        for r in rows:
            r = dict(r.as_dict() if hasattr(r, "as_dict") else r)
            missing = [c for c in ("cell", "unit", "utterance") if not r.get(c)]
            if missing:  # INSERT OR IGNORE would drop such a row without a word
                raise ValueError(f"a result row needs {', '.join(missing)} (its identity); got keys {sorted(r)}")
            if r.get("created") is None:
                r["created"] = now
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

    def add_failure(self, cell: dict[str, Any], error: str, study: str | None = None) -> None:
        with self.conn:
            self.conn.execute(
                "INSERT INTO failures(system, task, defense, attack, setting, error, created, study) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (cell.get("system"), cell.get("task"), cell.get("defense"), cell.get("attack"), cell.get("setting"),
                 error, time.time(), study),
            )

    def rows(self, where: str = "", params: Sequence[Any] = (), study: str | None = None) -> list[dict[str, Any]]:
        where, args = self._scope(where, params, study)
        cur = self.conn.execute(f"SELECT {', '.join(COLUMNS)} FROM results {where} ORDER BY id", args)
        out = []
        for rec in cur:
            d = dict(zip(COLUMNS, rec))
            for c in JSON_COLUMNS:
                if d[c] is not None:
                    d[c] = json.loads(d[c])
            out.append(d)
        return out

    def add_warnings(self, where: str, params: Sequence[Any], codes: dict[str, str], study: str | None = None) -> int:
        """Merge warning ``codes`` (code -> message) into the ``warnings`` of the rows matching ``where`` (of
        ``study`` when given), in one transaction; idempotent. Returns the number of rows changed."""
        where, args = self._scope(where, params, study)
        changed = 0
        with self.conn:
            cur = self.conn.execute(f"SELECT id, warnings FROM results {where}", args)
            for rid, raw in cur.fetchall():
                current = json.loads(raw) if raw else []
                seen = {w.get("code") for w in current if isinstance(w, dict)}
                new = [{"code": c, "message": m} for c, m in codes.items() if c not in seen]
                if new:
                    self.conn.execute("UPDATE results SET warnings=? WHERE id=?", (_json(current + new), rid))
                    changed += 1
        return changed

    def cells(self, study: str | None = None) -> list[dict[str, Any]]:
        """Every (system, task, defense, attack, setting) present, in insertion order, with its row count."""
        where, args = self._scope("", (), study)
        cur = self.conn.execute(
            f"SELECT system, task, defense, attack, setting, COUNT(*) FROM results {where} "
            "GROUP BY system, task, defense, attack, setting ORDER BY MIN(id)", args
        )
        keys = ("system", "task", "defense", "attack", "setting", "n")
        return [dict(zip(keys, r)) for r in cur]

    def failures(self, study: str | None = None) -> list[dict[str, Any]]:
        where, args = ("", ()) if study is None else ("WHERE study=?", (study,))
        cur = self.conn.execute(
            f"SELECT system, task, defense, attack, setting, error, created FROM failures {where} ORDER BY id", args)
        keys = ("system", "task", "defense", "attack", "setting", "error", "created")
        return [dict(zip(keys, r)) for r in cur]

    def count(self, study: str | None = None) -> int:
        where, args = self._scope("", (), study)
        return int(self.conn.execute(f"SELECT COUNT(*) FROM results {where}", args).fetchone()[0])

    def summary(self, study: str | None = None) -> list[dict[str, Any]]:
        """Per (system, task, defense, attack, setting): n, accuracy, success rate, mean queries."""
        where, args = self._scope("", (), study)
        cur = self.conn.execute(
            "SELECT system, task, defense, attack, setting, COUNT(*), AVG(correct), AVG(success), AVG(queries) "
            f"FROM results {where} GROUP BY system, task, defense, attack, setting ORDER BY MIN(id)", args
        )
        keys = ("system", "task", "defense", "attack", "setting", "n", "accuracy", "success_rate", "queries")
        return [dict(zip(keys, r)) for r in cur]
