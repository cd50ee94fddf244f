"""The core's layers, and what a plugin distribution may import — read from the source with :mod:`ast`.

Layers, lowest first (``docs/architecture.md``); a module may import modules of its own layer and lower ones::

    data(-1, data only) < base(0) < sdk(1) < builtins(2) < plugins(3) = testing(3) < compose(4) < study(5)
        < report(6) < cli(7) < api(8: sec4sr_core/api.py and sec4sr_core/__init__.py)

What counts as an import of module ``m`` by file ``f`` (at any nesting level: module body, functions, methods,
``try`` / ``if`` blocks):

- ``import a.b.c`` imports ``a.b.c``; ``from a.b import c`` imports the submodule ``a.b.c`` when there is one, else
  the package ``a.b``; relative imports are resolved against ``f``'s package. So ``from sec4sr_core.sdk import X``
  imports ``sdk/__init__``, ``from sec4sr_core.sdk.attack import X`` imports ``sdk/attack`` only: the packages above a
  submodule also execute, but the core's package ``__init__`` modules are lazy (PEP 562) or the layer's own code, so
  a submodule import is not counted as an import of its parents.
- ``importlib.import_module("a.b")`` / ``__import__("a.b")`` with a literal argument (or a module-level string
  constant: ``MODULE = "a.b"`` ... ``import_module(MODULE)``) imports ``a.b``; an f-string
  argument imports every module its pattern matches (``f"{commands.__name__}.{x}"``, with ``commands`` an imported
  module, matches every ``sec4sr_core.cli.commands.*``).
- ``register("pkg.mod:Attr", ...)`` — a lazy component path — imports ``pkg.mod``.
- A module-level table of module-name strings (``_MODULES`` of ``sdk/__init__``, ``_NAMES`` of the façade, which
  resolve names lazily) imports every module it names.

Imports under ``if TYPE_CHECKING:`` never execute: they are exempt from the cycle check, but are still held to the
layer order (a type a lower layer needs belongs in a lower layer). A cycle is a strongly connected component of the
module graph with more than one module; an import of a module that does not exist is an error too.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = "sec4sr_core"

#: layer folder (or module) -> rank; a module may import ranks <= its own
LAYER_RANK = {"data": -1, "base": 0, "sdk": 1, "builtins": 2, "plugins": 3, "testing": 3, "compose": 4, "study": 5,
              "report": 6, "cli": 7, "api": 8}

#: plugin distributions shipped in this repository: folder -> the folder holding its package code
PLUGIN_DISTRIBUTIONS = ("sec4sr_plugins_attacks", "sec4sr_plugins_defenses", "sec4sr_plugins_models")

_IDENT = r"[A-Za-z_]\w*"
_DOTTED = re.compile(rf"{_IDENT}(?:\.{_IDENT})*")
_LAZY_PATH = re.compile(rf"({_IDENT}(?:\.{_IDENT})*):{_IDENT}(?:\.{_IDENT})*")


@dataclass(frozen=True)
class Import:
    """One import of ``target`` (a dotted module name, or an f-string pattern already expanded) by ``path``."""

    path: str  #: file, relative to the scanned root (posix)
    line: int
    target: str
    kind: str = "import"  #: import | import_module | register | lazy table
    type_only: bool = False  #: under ``if TYPE_CHECKING:``
    names: tuple[str, ...] = ()  #: for ``from target import a, b``: the names taken from a package

    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def how(self) -> str:
        return "" if self.kind == "import" else f" [{self.kind}]"


@dataclass
class Tree:
    """The modules under a root: dotted name -> source file, and every import each file makes."""

    root: Path
    files: dict[str, Path] = field(default_factory=dict)  #: module -> file
    imports: dict[str, list[Import]] = field(default_factory=dict)  #: module -> its imports


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py")
                  if "__pycache__" not in p.parts and not any(part.endswith(".egg-info") for part in p.parts))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Collector(ast.NodeVisitor):
    """Every import of one file, at any nesting level (see the module docstring for what counts)."""

    def __init__(self, rel: str, module: str, is_package: bool, known: set[str], roots: set[str]):
        self.rel, self.module, self.known, self.roots = rel, module, known, roots
        self.package = module if is_package else module.rpartition(".")[0]
        self.found: list[Import] = []
        self.type_only = False
        self.module_aliases: dict[str, str] = {}  #: local name -> module it is bound to
        self.constants: dict[str, str] = {}  #: module-level ``NAME = "literal"`` strings

    def read_constants(self, tree: ast.Module) -> None:
        for stmt in tree.body:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target] if isinstance(
                stmt, ast.AnnAssign) else []
            value = getattr(stmt, "value", None)
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                self.constants.update({t.id: value.value for t in targets if isinstance(t, ast.Name)})

    def literal(self, node: ast.expr) -> str | None:
        """The string ``node`` always evaluates to: a literal, or a module-level string constant."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return self.constants.get(node.id)
        return None

    def add(self, node: ast.AST, target: str, kind: str = "import", names: tuple[str, ...] = ()) -> None:
        self.found.append(Import(self.rel, node.lineno, target, kind, self.type_only, names))

    def resolve(self, name: str, level: int) -> str:
        if not level:
            return name
        base = self.package.split(".") if self.package else []
        base = base[: len(base) - (level - 1)] if level > 1 else base
        return ".".join([*base, name] if name else base)

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            return self.generic_visit(node)
        self.visit(node.test)
        before, self.type_only = self.type_only, True
        for stmt in node.body:
            self.visit(stmt)
        self.type_only = before
        for stmt in node.orelse:
            self.visit(stmt)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.add(node, alias.name)
            if alias.asname:
                self.module_aliases[alias.asname] = alias.name
            else:
                top = alias.name.partition(".")[0]
                self.module_aliases[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self.resolve(node.module or "", node.level)
        from_package = []
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if alias.name != "*" and sub in self.known:
                self.add(node, sub)
                self.module_aliases[alias.asname or alias.name] = sub
            else:
                from_package.append(alias.name)
        if from_package:
            self.add(node, base, names=tuple(from_package))

    def _pattern(self, node: ast.JoinedStr) -> re.Pattern | None:
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(re.escape(str(value.value)))
            elif (isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Attribute)
                  and value.value.attr == "__name__" and isinstance(value.value.value, ast.Name)
                  and value.value.value.id in self.module_aliases):
                parts.append(re.escape(self.module_aliases[value.value.value.id]))
            elif isinstance(value, ast.FormattedValue) and self.literal(value.value) is not None:
                parts.append(re.escape(self.literal(value.value)))
            elif isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Name) and (
                    value.value.id in ("__name__", "__package__")):
                parts.append(re.escape(self.module if value.value.id == "__name__" else self.package))
            else:
                parts.append(r"[\w.]+")
        return re.compile("".join(parts))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        fname = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if fname in ("import_module", "__import__") and node.args:
            arg = node.args[0]
            if self.literal(arg) is not None:
                name = self.literal(arg)
                if name.startswith("."):  # import_module(".x", __package__)
                    level = len(name) - len(name.lstrip("."))
                    name = self.resolve(name.lstrip("."), level)
                self.add(node, name, "import_module")
            elif isinstance(arg, ast.JoinedStr):
                pattern = self._pattern(arg)
                for mod in sorted(self.known):
                    if pattern.fullmatch(mod):
                        self.add(node, mod, "import_module")
        elif fname == "register":
            for arg in node.args:
                if self.literal(arg) is not None:
                    match = _LAZY_PATH.fullmatch(self.literal(arg))
                    if match:
                        self.add(node, match.group(1), "register")
        self.generic_visit(node)

    def tables(self, tree: ast.Module) -> None:
        """Module-level tables of module-name strings (lazy name resolution)."""
        for stmt in tree.body:
            value = stmt.value if isinstance(stmt, (ast.Assign, ast.AnnAssign)) else None
            if not isinstance(value, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
                continue
            elements = [*value.keys, *value.values] if isinstance(value, ast.Dict) else value.elts
            for element in elements:
                if not (isinstance(element, ast.Constant) and isinstance(element.value, str)):
                    continue
                text = element.value
                lazy = _LAZY_PATH.fullmatch(text)
                text = lazy.group(1) if lazy else text
                if _DOTTED.fullmatch(text) and text.partition(".")[0] in self.roots and (
                        "." in text or text in self.known):
                    self.add(element, text, "lazy table")


def collect(path: Path, root: Path, known: set[str], roots: set[str]) -> list[Import]:
    """Every import ``path`` makes (``root`` is the folder its top-level package lives in)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    collector = _Collector(path.relative_to(root).as_posix(), module_name(root, path), path.name == "__init__.py",
                           known, roots)
    collector.read_constants(tree)
    collector.visit(tree)
    collector.tables(tree)
    return collector.found


def scan(root: Path, packages: dict[str, Path], roots: set[str] | None = None) -> Tree:
    """Modules of each ``packages`` entry (top-level name -> the folder that holds it), and their imports.

    ``root`` is the path files are shown relative to; ``roots`` the top-level names whose string tables count.
    """
    tree = Tree(root)
    bases: dict[str, Path] = {}
    for package, parent in packages.items():
        for path in python_files(parent / package):
            mod = module_name(parent, path)
            tree.files[mod], bases[mod] = path, parent
    known = set(tree.files)
    roots = roots or set(packages)
    for mod, path in tree.files.items():
        found = collect(path, bases[mod], known, roots)
        rel = path.relative_to(root).as_posix()
        tree.imports[mod] = [Import(rel, i.line, i.target, i.kind, i.type_only, i.names) for i in found]
    return tree


def layer_of(module: str, package: str = CORE) -> str | None:
    """The layer a module of the core belongs to, or ``None`` for a module outside every layer."""
    parts = module.split(".")
    if parts[0] != package:
        return None
    if len(parts) == 1 or parts[1] == "api":
        return "api"
    return parts[1] if parts[1] in LAYER_RANK else None


def layer_violations(tree: Tree, package: str = CORE, plugin_packages: frozenset[str] = frozenset()) -> list[str]:
    """Upward imports, imports of modules that do not exist, modules in no layer, imports of plugin packages."""
    out = []
    for mod, imports in sorted(tree.imports.items()):
        src = layer_of(mod, package)
        if src is None:
            out.append(f"{tree.files[mod].relative_to(tree.root).as_posix()} is in no layer (add it to one)")
            continue
        for imp in imports:
            top = imp.target.partition(".")[0]
            if top in plugin_packages:
                out.append(f"{imp.where()} imports {imp.target} (the core never imports a plugin distribution)"
                           f"{imp.how()}")
            if top != package:
                continue
            if imp.target not in tree.files:
                out.append(f"{imp.where()} imports {imp.target}, which does not exist{imp.how()}")
                continue
            dst = layer_of(imp.target, package)
            if dst is not None and LAYER_RANK[dst] > LAYER_RANK[src]:
                out.append(f"{imp.where()} imports {imp.target} (layer {src} -> layer {dst}, upward){imp.how()}")
    return out


def _sccs(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    result.append(sorted(component))
    return result


def _shortest_cycle(start: str, members: set[str], graph: dict[str, set[str]]) -> list[str]:
    parent = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & members):
            if child == start:
                path = [node]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    return [start]


def cycles(tree: Tree) -> list[str]:
    """Every import cycle among the tree's modules (``TYPE_CHECKING`` imports excluded), one shortest loop each."""
    graph: dict[str, set[str]] = {mod: set() for mod in tree.files}
    where: dict[tuple[str, str], list[Import]] = {}
    for mod, imports in tree.imports.items():
        for imp in imports:
            if imp.type_only or imp.target not in tree.files or imp.target == mod:
                continue
            graph[mod].add(imp.target)
            where.setdefault((mod, imp.target), []).append(imp)
    out = []
    for component in _sccs(graph):
        if len(component) < 2:
            continue
        loop = _shortest_cycle(component[0], set(component), graph)
        steps = []
        for a, b in pairwise(loop):
            imp = where[(a, b)][0]
            steps.append(f"    {imp.where()} imports {b}{imp.how()}")
        out.append(f"cycle {' -> '.join(loop)} (component: {', '.join(component)}):\n" + "\n".join(steps))
    return out


def _plugin_distributions(root: Path) -> dict[str, tuple[Path, list[Path]]]:
    """In-tree plugin distributions: name -> (folder their modules are named from, the .py files to check).

    For ``sec4sr_plugins_*`` the package code only; for each example under ``plugins/`` every file (tests too).
    """
    found = {}
    for dist in PLUGIN_DISTRIBUTIONS:
        found[dist] = (root / dist, python_files(root / dist / dist))
    for pyproject in sorted((root / "plugins").glob("*/pyproject.toml")):
        found[pyproject.parent.name] = (pyproject.parent, python_files(pyproject.parent))
    return found


def _plugin_packages(root: Path) -> dict[str, str]:
    """Top-level package of each in-tree plugin distribution -> the distribution."""
    return {init.parent.name: dist for dist, (base, _) in _plugin_distributions(root).items()
            for init in base.glob("*/__init__.py")}


def sdk_exports(root: Path, package: str = CORE) -> dict[str, str]:
    """Names ``from sec4sr_core.sdk import X`` resolves (name -> defining module), read from ``sdk/__init__._MODULES``.

    As at run time (``module.__dict__``), a module's public module-level names count, imported ones included.
    """
    init = ast.parse((root / package / "sdk" / "__init__.py").read_text(encoding="utf-8"))
    modules = next(ast.literal_eval(s.value) for s in init.body
                   if isinstance(s, ast.Assign) and any(getattr(t, "id", None) == "_MODULES" for t in s.targets))
    names: dict[str, str] = {}
    for mod in modules:
        path = root.joinpath(*mod.split(".")).with_suffix(".py")
        if not path.exists():
            continue
        for name in _module_level_names(ast.parse(path.read_text(encoding="utf-8"))):
            if not name.startswith("_"):
                names.setdefault(name, mod)
    return names


def _module_level_names(tree: ast.Module, imported: bool = True) -> set[str]:
    """Names bound at module level (in ``if``/``try``/... blocks too); ``imported=False`` leaves out imports."""
    names: set[str] = set()

    def bind(target: ast.expr) -> None:
        if isinstance(target, ast.Name):
            names.add(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for elt in target.elts:
                bind(elt)

    def walk(body: list[ast.stmt]) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(stmt.name)
            elif isinstance(stmt, ast.Assign):
                for target in stmt.targets:
                    bind(target)
            elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) and stmt.value is not None:
                bind(stmt.target)
            elif isinstance(stmt, ast.Import) and imported:
                names.update(a.asname or a.name.partition(".")[0] for a in stmt.names)
            elif isinstance(stmt, ast.ImportFrom) and imported:
                names.update(a.asname or a.name for a in stmt.names if a.name != "*")
            elif isinstance(stmt, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                for block in ("body", "orelse", "finalbody"):
                    walk(getattr(stmt, block, []))
                for handler in getattr(stmt, "handlers", []):
                    walk(handler.body)
    walk(tree.body)
    return names


def plugin_violations(root: Path, package: str = CORE) -> list[str]:
    """Imports of the core other than its sdk, of another plugin distribution, or of a name the sdk lacks."""
    distributions = _plugin_distributions(root)
    packages = _plugin_packages(root)
    known = set(scan(root, {package: root}).files)
    for base, files in distributions.values():
        known |= {module_name(base, f) for f in files}
    exports = sdk_exports(root, package)
    out = []
    for own, (base, files) in sorted(distributions.items()):
        for path in files:
            rel = path.relative_to(root).as_posix()
            in_tests = "tests" in path.relative_to(base).parts
            for imp in collect(path, base, known, {package, *packages}):
                imp = Import(rel, imp.line, imp.target, imp.kind, imp.type_only, imp.names)
                top = imp.target.partition(".")[0]
                if top == package:
                    allowed = imp.target == f"{package}.sdk" or imp.target.startswith(f"{package}.sdk.") or (
                        in_tests and imp.target == f"{package}.testing")
                    if not allowed:
                        also = f" and {package}.testing in its tests" if in_tests else ""
                        out.append(f"{imp.where()} imports {imp.target} (a plugin may import only {package}.sdk"
                                   f"{also}){imp.how()}")
                    elif imp.target not in known:
                        out.append(f"{imp.where()} imports {imp.target}, which does not exist{imp.how()}")
                    elif imp.target == f"{package}.sdk":
                        out += [f"{imp.where()} imports {name!r} from {package}.sdk, which does not provide it"
                                for name in imp.names if name != "*" and name not in exports]
                elif top in packages and packages[top] != own:
                    out.append(f"{imp.where()} imports {imp.target} (distribution {own} -> distribution "
                               f"{packages[top]}: plugin distributions never import each other){imp.how()}")
    return sorted(out)


def _report(title: str, problems: list[str]) -> str:
    return f"{title} ({len(problems)}):\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------------------------------------
# the real tree


def test_core_imports_only_downward():
    tree = scan(ROOT, {CORE: ROOT})
    assert len(tree.files) > 30, "the scan found too few core modules"
    problems = layer_violations(tree, plugin_packages=frozenset(_plugin_packages(ROOT)))
    assert not problems, _report("upward imports in sec4sr_core", problems)


def test_core_has_no_import_cycles():
    problems = cycles(scan(ROOT, {CORE: ROOT}))
    assert not problems, _report("import cycles in sec4sr_core", problems)


def test_plugin_distributions_import_only_the_sdk():
    assert len(_plugin_packages(ROOT)) >= 7
    problems = plugin_violations(ROOT)
    assert not problems, _report("plugin imports outside sec4sr_core.sdk", problems)


def test_every_name_of_the_sdk_list_is_a_module_of_base_or_sdk():
    init = ROOT / CORE / "sdk" / "__init__.py"
    tree = scan(ROOT, {CORE: ROOT})
    listed = [i.target for i in tree.imports[f"{CORE}.sdk"] if i.kind == "lazy table"]
    assert len(listed) >= 10, f"{init} lists too few modules in _MODULES"
    assert {layer_of(m) for m in listed} <= {"base", "sdk"}, listed
    for name in ("Attack", "AttackResult", "SpeakerModel", "Defense", "Params", "hookimpl", "Knowledge", "Task"):
        assert name in sdk_exports(ROOT), name


def _doc_section(title: str) -> str:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"docs/architecture.md has no section '## {title}'"
    return match.group(1)


def test_architecture_page_names_every_module():
    """Every core module with code has its line under 'What lives where' (package ``__init__`` files holding only
    a docstring excepted)."""
    section = _doc_section("What lives where")
    missing = []
    for path in python_files(ROOT / CORE):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        if path.name == "__init__.py" and path.parent != ROOT / CORE and all(
                isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant) for s in body):
            continue
        rel = path.relative_to(ROOT / CORE).as_posix()
        if rel.startswith("data/"):
            rel = "data/"
        if f"| `{rel}` |" not in section:
            missing.append(rel)
    assert not missing, f"docs/architecture.md 'What lives where' lacks a line for: {', '.join(missing)}"


def test_architecture_page_lists_only_names_the_sdk_provides():
    section = _doc_section("What a plugin may import")
    rows = re.findall(r"^\| `([\w/]+\.py)` \| (.+) \|$", section, re.MULTILINE)
    exports = sdk_exports(ROOT)
    listed_modules = {f"{CORE}." + m[:-3].replace("/", ".") for m, _ in rows}
    tree = scan(ROOT, {CORE: ROOT})
    in_sdk = {i.target for i in tree.imports[f"{CORE}.sdk"] if i.kind == "lazy table"}
    assert listed_modules == in_sdk, f"sdk modules documented {sorted(listed_modules)} != _MODULES {sorted(in_sdk)}"
    wrong = []
    for module, names in rows:
        defined = _module_level_names(ast.parse((ROOT / CORE / module).read_text(encoding="utf-8")), imported=False)
        wrong += [f"{name} ({module})" for name in re.findall(r"`(\w+)`", names)
                  if name not in exports or name not in defined]
    assert not wrong, f"docs/architecture.md lists names the sdk lacks or the module does not define: {wrong}"


# ---------------------------------------------------------------------------------------------------------------------
# the checker itself, on small synthetic trees


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in {p.parent for p in root.rglob("*.py")}:  # every folder a package
        (folder / "__init__.py").touch()
    return root


def test_checker_flags_an_upward_import_inside_a_function(tmp_path):
    _write(tmp_path, {
        "sec4sr_core/base/types.py": "def f():\n    from sec4sr_core.study.runner import Study\n    return Study\n",
        "sec4sr_core/study/runner.py": "from sec4sr_core.base.types import f\nclass Study: ...\n",
    })
    problems = layer_violations(scan(tmp_path, {CORE: tmp_path}))
    assert problems == [
        "sec4sr_core/base/types.py:2 imports sec4sr_core.study.runner (layer base -> layer study, upward)"]


def test_checker_flags_import_module_strings_register_paths_and_relative_imports(tmp_path):
    _write(tmp_path, {
        "sec4sr_core/sdk/a.py": "import importlib\n\ndef f():\n"
                                "    return importlib.import_module('sec4sr_core.cli.main')\n",
        "sec4sr_core/sdk/b.py": "def g(register):\n    register('sec4sr_core.report.html:Page', name='p')\n"
                                "HTML = 'sec4sr_core.report.html'\ndef h():\n    __import__(HTML)\n",
        "sec4sr_core/compose/c.py": "def h():\n    from ..study import d\n",
        "sec4sr_core/study/d.py": "from sec4sr_core.cli import commands\nimport importlib\n"
                                  "def k(n):\n    return importlib.import_module(f'{commands.__name__}.{n}')\n",
        "sec4sr_core/cli/main.py": "",
        "sec4sr_core/cli/commands/run.py": "",
        "sec4sr_core/report/html.py": "",
        "sec4sr_core/base/e.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                 "    from sec4sr_core.sdk import a\n",
        "sec4sr_core/base/f.py": "def f():\n    from sec4sr_core.base.gone import x\n",
        "sec4sr_core/data/g.py": "import sec4sr_core.base.e\n",
        "sec4sr_core/extra.py": "",
    })
    problems = layer_violations(scan(tmp_path, {CORE: tmp_path}))
    assert problems == [
        "sec4sr_core/base/e.py:3 imports sec4sr_core.sdk.a (layer base -> layer sdk, upward)",
        "sec4sr_core/base/f.py:2 imports sec4sr_core.base.gone, which does not exist",
        "sec4sr_core/compose/c.py:2 imports sec4sr_core.study.d (layer compose -> layer study, upward)",
        "sec4sr_core/data/g.py:1 imports sec4sr_core.base.e (layer data -> layer base, upward)",
        "sec4sr_core/extra.py is in no layer (add it to one)",
        "sec4sr_core/sdk/a.py:4 imports sec4sr_core.cli.main (layer sdk -> layer cli, upward) [import_module]",
        "sec4sr_core/sdk/b.py:2 imports sec4sr_core.report.html (layer sdk -> layer report, upward) [register]",
        "sec4sr_core/sdk/b.py:5 imports sec4sr_core.report.html (layer sdk -> layer report, upward) [import_module]",
        "sec4sr_core/study/d.py:1 imports sec4sr_core.cli.commands (layer study -> layer cli, upward)",
        ("sec4sr_core/study/d.py:4 imports sec4sr_core.cli.commands.run (layer study -> layer cli, upward)"
        " [import_module]"),
    ]


def test_checker_flags_a_cycle_through_function_level_imports(tmp_path):
    _write(tmp_path, {
        "sec4sr_core/study/runner.py": "def run():\n    from sec4sr_core.study.executors import go\n    return go\n",
        "sec4sr_core/study/executors.py": "def go():\n    from . import runner\n    return runner\n",
        "sec4sr_core/study/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                      "    from sec4sr_core.study.runner import run\n",
        "sec4sr_core/study/more.py": "import sec4sr_core.study.typed\n",
    })
    tree = scan(tmp_path, {CORE: tmp_path})
    assert layer_violations(tree) == []
    assert cycles(tree) == [
        ("cycle sec4sr_core.study.executors -> sec4sr_core.study.runner -> sec4sr_core.study.executors "
        "(component: sec4sr_core.study.executors, sec4sr_core.study.runner):\n"
        "    sec4sr_core/study/executors.py:2 imports sec4sr_core.study.runner\n"
        "    sec4sr_core/study/runner.py:2 imports sec4sr_core.study.executors")
    ]


def test_checker_reads_lazy_tables_and_treats_packages_precisely(tmp_path):
    """sdk/__init__ lists its modules as strings; a submodule import of ``sdk.x`` is no import of ``sdk``."""
    _write(tmp_path, {
        "sec4sr_core/__init__.py": "_NAMES = {'Attack': 'sec4sr_core.sdk.attack', 'go': 'sec4sr_core.api'}\n",
        "sec4sr_core/api.py": "from sec4sr_core.study import runner\n",
        "sec4sr_core/sdk/__init__.py": "_MODULES = ('sec4sr_core.base.types', 'sec4sr_core.sdk.attack',"
                                       " 'sec4sr_core.sdk.interfaces')\n",
        "sec4sr_core/sdk/interfaces.py": "from sec4sr_core.base.types import Task\n",
        "sec4sr_core/sdk/attack.py": "from sec4sr_core.sdk.interfaces import X\nfrom sec4sr_core.base import types\n",
        "sec4sr_core/base/types.py": "Task = 1\n",
        "sec4sr_core/study/runner.py": "from sec4sr_core.sdk import Attack\n",
    })
    tree = scan(tmp_path, {CORE: tmp_path})
    lazy = sorted(i.target for i in tree.imports["sec4sr_core.sdk"] if i.kind == "lazy table")
    assert lazy == ["sec4sr_core.base.types", "sec4sr_core.sdk.attack", "sec4sr_core.sdk.interfaces"]
    assert {i.target for i in tree.imports["sec4sr_core.sdk.attack"]} == {"sec4sr_core.sdk.interfaces",
                                                                           "sec4sr_core.base.types"}
    assert [i.target for i in tree.imports["sec4sr_core"]] == ["sec4sr_core.sdk.attack", "sec4sr_core.api"]
    assert layer_violations(tree) == [] and cycles(tree) == []
    # ... but a module of the sdk that takes a name from the package itself closes a loop
    (tmp_path / "sec4sr_core/sdk/interfaces.py").write_text("def f():\n    from sec4sr_core.sdk import Attack\n")
    assert [c.splitlines()[0] for c in cycles(scan(tmp_path, {CORE: tmp_path}))] == [
        ("cycle sec4sr_core.sdk -> sec4sr_core.sdk.interfaces -> sec4sr_core.sdk "
        "(component: sec4sr_core.sdk, sec4sr_core.sdk.attack, sec4sr_core.sdk.interfaces):")]


def test_checker_flags_plugins_reaching_past_the_sdk(tmp_path):
    _write(tmp_path, {
        "sec4sr_core/sdk/__init__.py": "_MODULES = ('sec4sr_core.sdk.attack',)\n",
        "sec4sr_core/sdk/attack.py": "class Attack: ...\nimport torch\n",
        "sec4sr_core/study/training.py": "",
        "sec4sr_core/testing.py": "",
        "sec4sr_plugins_attacks/sec4sr_plugins_attacks/pgd.py":
            "from sec4sr_core.sdk import Attack, torch\nfrom sec4sr_core.sdk.attack import Attack\n"
            "def f():\n    from sec4sr_core.study.training import t\n"
            "    from sec4sr_plugins_models.ge2e import GE2E\n    from sec4sr_core.sdk import Nope\n",
        "sec4sr_plugins_defenses/sec4sr_plugins_defenses/qt.py": "import sec4sr_core\n",
        "sec4sr_plugins_models/sec4sr_plugins_models/__init__.py":
            "def register_models(register):\n    register('sec4sr_plugins_models.ge2e:GE2E')\n",
        "sec4sr_plugins_models/sec4sr_plugins_models/ge2e.py": "class GE2E: ...\n",
        "plugins/ex/pyproject.toml": "",
        "plugins/ex/sec4sr_ex/__init__.py": "from sec4sr_core import Attack\n",
        "plugins/ex/tests/test_ex.py": "from sec4sr_core.testing import check\nfrom sec4sr_ex import A\n"
                                       "from sec4sr_plugins_attacks import pgd\n",
    })
    assert plugin_violations(tmp_path) == [
        "plugins/ex/sec4sr_ex/__init__.py:1 imports sec4sr_core (a plugin may import only sec4sr_core.sdk)",
        ("plugins/ex/tests/test_ex.py:3 imports sec4sr_plugins_attacks.pgd (distribution ex -> distribution "
        "sec4sr_plugins_attacks: plugin distributions never import each other)"),
        ("sec4sr_plugins_attacks/sec4sr_plugins_attacks/pgd.py:4 imports sec4sr_core.study.training "
        "(a plugin may import only sec4sr_core.sdk)"),
        ("sec4sr_plugins_attacks/sec4sr_plugins_attacks/pgd.py:5 imports sec4sr_plugins_models.ge2e (distribution "
        "sec4sr_plugins_attacks -> distribution sec4sr_plugins_models: plugin distributions never import each other)"),
        ("sec4sr_plugins_attacks/sec4sr_plugins_attacks/pgd.py:6 imports 'Nope' from sec4sr_core.sdk, "
        "which does not provide it"),
        ("sec4sr_plugins_defenses/sec4sr_plugins_defenses/qt.py:1 imports sec4sr_core "
        "(a plugin may import only sec4sr_core.sdk)"),
    ]
