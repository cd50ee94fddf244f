"""A cache of ``sec4sr list``'s component descriptions, so listing does not import torch after the first time.

``sec4sr list`` shows each component's parameter schema and class attributes (``knowledge``, ``level``, ``tasks``,
...). They live on classes defined in torch-importing modules, registered lazily by ``"module:Class"`` path: one
description costs the import of the plugin module (7–10 s of ``import torch`` on a laptop CPU). This module keeps
the descriptions of path-registered entries in a JSON file and serves them again as long as nothing they could
depend on has changed.

Why a cache, and not schemas read from the source (AST) or Params classes moved into torch-free modules:

* The schema is pydantic's own output (``model_json_schema()`` of a class built from parameter mixins across the
  sdk and the plugin, validators, ``Literal`` types, computed defaults, inherited class attributes). Re-deriving it
  from the syntax tree would be a second, approximate implementation of pydantic; ``list --json`` must stay exactly
  what the classes say.
* Moving every plugin's Params into separate modules changes every plugin, including third-party ones; a cache
  works for any plugin registered by path without asking its author for anything.

Exactness — a cached description is served only when, compared with the process that computed it:

* the interpreter and import path are the same (``sys.version``, ``sys.executable``, ``sys.prefix``, ``sys.path``
  with ``''`` resolved to the working directory): this selects the cache file (``listing-<key>.json``);
* the entry is the same registration: kind, name, distribution, the ``"module:attr"`` path and the summary given
  to ``register``;
* every file it could have read is unchanged: each module file in ``sys.modules`` when the descriptions were
  computed (the plugin, the sdk, pydantic, torch, ...), each regular file opened while computing them (recorded with
  an audit hook: data files read at import time count too), each folder holding such a module and each folder on
  ``sys.path`` (a module added beside another, or a package installed, changes its folder) — except the temporary
  folder and the script's folder or working directory that Python puts first on ``sys.path`` (busy folders that
  would invalidate the cache all the time; a module dropped there to shadow an installed one is not noticed).
  "Unchanged" means equal ``(mtime_ns, ctime_ns, size, inode)``; a file that was absent must still be absent. The
  ctime cannot be set back by tools that restore mtimes (``tar``, ``rsync -t``), and an atomic replace changes the
  inode.

If anything differs, the whole file is recomputed (the first miss imports torch anyway, so finer invalidation would
save nothing). What the cache cannot see: a class whose schema depends on an environment variable or on the clock at
import time. Set ``SEC4SR_LIST_CACHE=0`` to bypass the cache (read and write).

Only descriptions that survive the JSON round trip exactly (same ``repr``: tuples stay tuples, ints stay ints) are
stored; rows carrying an ``error`` (a component that failed to load) are never stored, so a fixed or newly installed
dependency is picked up at once. The file lives in ``$SEC4SR_HOME/cache/`` (default ``~/.cache/sec4sr/cache/``), is
written atomically (a temporary file in the same folder, then ``os.replace``; the ``KEEP`` most recently written
files are kept, one per interpreter and import path), and any problem reading or writing it
only means the descriptions are computed as without a cache. Nothing is stored when a dependency changed after the
process started (a long-lived process may hold a module older than its file).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

#: bump when the file layout or the meaning of its fields changes
FORMAT = 1
ENV_SWITCH = "SEC4SR_LIST_CACHE"
#: cache files kept (one per interpreter and import path); older ones are removed when a new one is written
KEEP = 8
#: prefixes of files whose reads are not dependencies (kernel interfaces, devices)
_VOLATILE = ("/proc/", "/sys/", "/dev/")

Describe = Callable[[Any], dict[str, Any]]


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """``$SEC4SR_HOME/cache`` (the model store's folder rule, without importing the torch-backed model store)."""
    return Path(os.environ.get("SEC4SR_HOME") or Path.home() / ".cache" / "sec4sr") / "cache"


def _search_path() -> list[str]:
    return [os.path.abspath(p or os.getcwd()) for p in sys.path]


def environment_key() -> str:
    """16 hex digits naming the interpreter and import path the cached descriptions were computed under."""
    doc = [FORMAT, sys.version, sys.executable, sys.prefix, _search_path()]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:16]


def cache_path() -> Path:
    return cache_dir() / f"listing-{environment_key()}.json"


def entry_key(entry: Any) -> str | None:
    """The registration an entry describes, or None for an entry whose target is an object (not cached: its module
    is imported already, so describing it costs nothing)."""
    if not isinstance(entry.target, str):
        return None
    return json.dumps([entry.kind, entry.name, entry.distribution, entry.target, entry.summary_hint])


def _fingerprint(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino]


# -- what the computation read ------------------------------------------------------------------------------------
_opened: set[str] = set()
_recording = False
_hooked = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _recording and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        try:
            _opened.add(os.path.abspath(os.fsdecode(args[0])))
        except Exception:  # noqa: BLE001, S110 - an audit hook must never raise into the caller
            pass


def _start_recording() -> None:
    global _recording, _hooked
    if not _hooked:  # audit hooks cannot be removed: install one per process, switched by _recording
        sys.addaudithook(_audit)
        _hooked = True
    _recording = True


def _stop_recording() -> set[str]:
    global _recording
    _recording = False
    paths = set(_opened)
    _opened.clear()
    return paths


def _dependencies(opened: Iterable[str]) -> dict[str, list[int] | None]:
    """Fingerprints of every module file loaded, every regular file in ``opened``, their folders and ``sys.path``."""
    files: set[str] = set()
    for name, module in list(sys.modules.items()):
        f = getattr(module, "__file__", None)
        if isinstance(f, str) and name != "__main__":  # the running script defines no component
            files.add(os.path.abspath(f))
    for p in opened:
        if p.startswith(_VOLATILE):
            continue
        try:
            if stat.S_ISREG(os.stat(p).st_mode):
                files.add(p)
        except OSError:
            continue
    folders = {os.path.dirname(f) for f in files} | set(_search_path())
    # not folders that change all the time: the temporary folder, and the script's folder or working directory
    # Python puts first on sys.path (a busy place; it still selects the cache file through environment_key)
    folders.discard(os.path.abspath(tempfile.gettempdir()))
    if sys.path and not sys.flags.safe_path:
        folders.discard(os.path.abspath(sys.path[0] or os.getcwd()))
    return {p: _fingerprint(p) for p in sorted(files | folders)}


def _process_start_ns() -> int:
    """When this process started (ns since the epoch): from ``/proc`` on Linux, else when this module was
    imported (which a long-lived process may reach after editing a module it imported earlier)."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            ticks = int(fh.read().rpartition(b")")[2].split()[19])  # field 22: start time, clock ticks after boot
        with open("/proc/stat", "rb") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith(b"btime "))
        hz = os.sysconf("SC_CLK_TCK")
        # btime is whole seconds, rounded down: the result is at most ~1 s early, which only errs on the safe side
        return (boot * hz + ticks) * 10**9 // hz
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED_NS


_IMPORTED_NS = time.time_ns()


def _settled(deps: dict[str, Any]) -> bool:
    """Whether no dependency changed after this process started. A module edited after it was imported here would
    be recorded with its new fingerprint next to a row computed from its old code, so such a row is not stored."""
    start = _process_start_ns()
    return all(fp is None or max(fp[0], fp[1]) < start for fp in deps.values())


def _unchanged(deps: dict[str, Any]) -> bool:
    return all(_fingerprint(p) == (list(fp) if fp is not None else None) for p, fp in deps.items())


# -- JSON with tuples ---------------------------------------------------------------------------------------------
def _encode(value: Any) -> Any:
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v) for v in value["__tuple__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _storable(row: dict[str, Any]) -> Any | None:
    """``row`` encoded for the file, or None when it would not come back identical."""
    if "error" in row:
        return None
    try:
        encoded = json.loads(json.dumps(_encode(row)))
    except (TypeError, ValueError):
        return None
    return encoded if repr(_decode(encoded)) == repr(row) else None


# -- the cache ----------------------------------------------------------------------------------------------------
class ListingCache:
    """The descriptions of one cache file, validated when it is read (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, Any] = {}  #: entry key -> encoded description
        self.deps: dict[str, Any] = {}
        self._read()

    def _read(self) -> None:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if doc.get("format") != FORMAT or not isinstance(doc.get("rows"), dict) \
                    or not isinstance(doc.get("deps"), dict):
                return
            if _unchanged(doc["deps"]):
                self.rows, self.deps = doc["rows"], doc["deps"]
        except (OSError, ValueError, TypeError, AttributeError):
            return  # absent, unreadable or malformed: computed as without a cache

    def describe(self, entries: Iterable[Any], describe: Describe) -> list[dict[str, Any]]:
        """``describe(entry)`` of each entry, in order; path-registered entries from the cache when it holds them."""
        entries = list(entries)
        keys = [entry_key(e) for e in entries]
        out: list[dict[str, Any] | None] = [
            _decode(self.rows[k]) if k is not None and k in self.rows else None for k in keys]
        missing = [i for i, row in enumerate(out) if row is None]
        if not missing:
            return out  # type: ignore[return-value]
        recording = any(keys[i] is not None for i in missing)
        if recording:
            _start_recording()
        try:
            for i in missing:
                out[i] = describe(entries[i])
        finally:
            opened = _stop_recording() if recording else set()
        stored = False
        for i in missing:
            if keys[i] is not None:
                encoded = _storable(out[i])
                if encoded is not None:
                    self.rows[keys[i]] = encoded
                    stored = True
        if stored:
            deps = {**self.deps, **_dependencies(opened)}
            if _settled(deps):
                self.deps = deps
                self._write()
        return out  # type: ignore[return-value]

    def _write(self) -> None:
        doc = {"format": FORMAT, "python": sys.version, "executable": sys.executable, "deps": self.deps,
               "rows": self.rows}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(doc, fh, separators=(",", ":"))
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
            others = sorted(self.path.parent.glob("listing-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
            for old in others[KEEP:]:
                old.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only or full cache folder: listing still works, only slower next time


def describe_entries(entries: Iterable[Any], describe: Describe) -> list[dict[str, Any]]:
    """The rows of ``sec4sr list`` for ``entries`` (registry :class:`~sec4sr_core.plugins.registry.Entry`), each
    ``describe(entry)`` (which handles a component's errors) or the same row from the cache.

    The file is read and validated on every call (a few ms per thousand dependencies), so a long-lived process
    that lists again after a file changed is not served a stale row; a call with no path-registered entry (presets
    registered as data, classes registered as objects) does not touch it."""
    entries = list(entries)
    if not enabled() or all(entry_key(e) is None for e in entries):
        return [describe(e) for e in entries]
    return ListingCache(cache_path()).describe(entries, describe)
