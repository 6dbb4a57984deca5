"""The import structure of ``edgeslim/`` follows the layers of docs/architecture.md.

Every module is parsed with :mod:`ast` (nothing is imported). An *edge* is an ``import`` or
``from ... import`` statement anywhere in a module: at module level, inside a function or
class, or under ``if TYPE_CHECKING:``. ``from edgeslim.pkg import name`` is an edge to the
submodule ``edgeslim.pkg.name`` when that is a module, else to ``edgeslim.pkg``.

* Layering: a module may import its own layer and the layers below it, never a layer above.
  ``TYPE_CHECKING`` imports count here (a type annotation that names a higher layer is a
  dependency on it all the same).
* Cycles: no two modules may reach each other. Imports inside functions count (a cycle
  hidden in a function is still a cycle); ``TYPE_CHECKING`` imports do not (they never run).
* Not edges: the implicit import of a parent package's ``__init__``, and registries that
  hold ``"module:attr"`` strings and import them on first use (``bench.backends``,
  ``train.methods``): those are lookups by name, not dependencies of the registry.

A module of a package that no layer names fails the test: place it in :data:`LAYERS`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "edgeslim"
DOC = ROOT / "docs" / "architecture.md"

#: bottom to top; a name is a module or a package (with all its submodules)
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("edgeslim", "edgeslim.errors", "edgeslim.utils")),
    ("models", ("edgeslim.models",)),
    ("data", ("edgeslim.data",)),
    ("channels", ("edgeslim.channels", "edgeslim.counting", "edgeslim.penalties")),
    ("sparsity", ("edgeslim.sparsity",)),
    ("checkpoint", ("edgeslim.checkpoint",)),
    ("train", ("edgeslim.train",)),
    ("surgery", ("edgeslim.surgery",)),
    ("export", ("edgeslim.export",)),
    ("bench", ("edgeslim.bench",)),
    ("pipelines", ("edgeslim.slim", "edgeslim.pipelines")),
    ("cli", ("edgeslim.cli", "edgeslim.__main__")),
]

#: imports that run against the layers or close a cycle, allowed for now, each with its reason.
#: Only code that is being rewritten elsewhere may stand here (edgeslim/surgery/, edgeslim/cli/);
#: an entry that no longer breaks a rule fails :func:`test_known_exceptions_are_still_needed`.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}

#: modules that must import without PyTorch (``edgeslim bench`` runs on devices without it)
TORCH_FREE: tuple[str, ...] = (
    "edgeslim",
    "edgeslim.errors",
    "edgeslim.bench",
    "edgeslim.bench.backends",
    "edgeslim.bench.compare",
    "edgeslim.bench.report",
    "edgeslim.bench.worker",
    "edgeslim.channels.cost",
    "edgeslim.channels.devices",
)


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    line: int
    type_checking: bool  # under ``if TYPE_CHECKING:``
    module_level: bool  # runs when ``src`` is imported

    def __str__(self) -> str:
        return f"{self.src} -> {self.dst} ({_path(self.src)}:{self.line})"


def _modules() -> dict[str, Path]:
    mods = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = p
    return mods


MODULES = _modules()


def _path(mod: str) -> str:
    return str(MODULES[mod].relative_to(ROOT))


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, type_checking: bool, module_level: bool) -> Iterator[tuple[ast.stmt, bool, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, type_checking, module_level
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), True, module_level)
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), type_checking, module_level)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _walk(child, type_checking, False)
        else:
            yield from _walk(child, type_checking, module_level)


def _edges_of(mod: str, path: Path) -> Iterator[Edge]:
    is_pkg = path.name == "__init__.py"
    for node, tc, top in _walk(ast.parse(path.read_text(encoding="utf-8")), False, True):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            assert isinstance(node, ast.ImportFrom)
            base = node.module or ""
            if node.level:
                pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        dsts = {_resolve(t) for t in targets if t.split(".")[0] == "edgeslim"}
        for dst in sorted(d for d in dsts if d and d != mod):
            yield Edge(mod, dst, node.lineno, tc, top)


EDGES: list[Edge] = [e for mod, path in MODULES.items() for e in _edges_of(mod, path)]


def layer_of(mod: str) -> int | None:
    """Index of ``mod``'s layer in :data:`LAYERS` (the longest name that covers it)."""
    best: tuple[int, int] | None = None  # (len of name, layer index)
    for i, (_, names) in enumerate(LAYERS):
        for name in names:
            covers = mod == name or (name != "edgeslim" and mod.startswith(name + "."))
            if covers and (best is None or len(name) > best[0]):
                best = (len(name), i)
    return None if best is None else best[1]


def layer_violations() -> set[tuple[str, str]]:
    out = set()
    for e in EDGES:
        src, dst = layer_of(e.src), layer_of(e.dst)
        if src is not None and dst is not None and dst > src:
            out.add((e.src, e.dst))
    return out


def _runtime_graph(skip: set[tuple[str, str]] = frozenset()) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for e in EDGES:
        if not e.type_checking and (e.src, e.dst) not in skip:
            graph[e.src].add(e.dst)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _describe(comp: list[str]) -> str:
    inside = set(comp)
    lines = [str(e) for e in EDGES if e.src in inside and e.dst in inside and not e.type_checking]
    return "cycle of " + ", ".join(comp) + ":\n    " + "\n    ".join(sorted(set(lines)))


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in MODULES if layer_of(m) is None)
    assert not unplaced, f"modules in no layer (add them to LAYERS and docs/architecture.md): {unplaced}"


def test_no_import_against_the_layers() -> None:
    bad = layer_violations() - set(KNOWN_EXCEPTIONS)
    names = [layer for layer, _ in LAYERS]
    msgs = [
        f"{e}: layer {names[layer_of(e.src)]!r} may not import layer {names[layer_of(e.dst)]!r}"  # type: ignore[index]
        for e in EDGES
        if (e.src, e.dst) in bad
    ]
    assert not msgs, "imports against the layers of docs/architecture.md:\n" + "\n".join(sorted(msgs))


def test_no_import_cycle() -> None:
    found = cycles(_runtime_graph(skip=set(KNOWN_EXCEPTIONS)))
    assert not found, "import cycles (function-level imports included):\n" + "\n".join(map(_describe, found))


def test_known_exceptions_are_still_needed() -> None:
    in_cycles = {
        (a, b) for comp in cycles(_runtime_graph()) for a in comp for b in _runtime_graph()[a] if b in comp
    }
    stale = sorted(set(KNOWN_EXCEPTIONS) - layer_violations() - in_cycles)
    assert not stale, f"KNOWN_EXCEPTIONS entries that no longer break a rule (remove them): {stale}"


def test_module_level_imports_of_torch_free_modules_need_no_torch() -> None:
    """What ``import M`` runs (module-level imports, parent packages included) imports no torch."""

    def parents(mod: str) -> list[str]:
        parts = mod.split(".")
        return [".".join(parts[:i]) for i in range(1, len(parts))]

    top_edges: dict[str, set[str]] = {m: set(parents(m)) for m in MODULES}
    for e in EDGES:
        if e.module_level and not e.type_checking:
            top_edges[e.src] |= {e.dst, *parents(e.dst)}
    for mod in TORCH_FREE:
        seen, todo = set(), [mod, *parents(mod)]
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += top_edges[m]
        heavy = sorted(m for m in seen if _imports_torch_at_module_level(m))
        assert not heavy, f"importing {mod} runs module-level `import torch` in {heavy}"


def _imports_torch_at_module_level(mod: str) -> bool:
    tree = ast.parse(MODULES[mod].read_text(encoding="utf-8"))
    for node, tc, top in _walk(tree, False, True):
        if not top or tc:
            continue
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        if any(n == "torch" or n.startswith("torch.") for n in names):
            return True
    return False


#: library modules that still choose matplotlib's global backend (being rewritten elsewhere)
PYPLOT_EXCEPTIONS: dict[str, str] = {}


def _uses_global_matplotlib(mod: str) -> bool:
    tree = ast.parse(MODULES[mod].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "matplotlib.pyplot" for a in node.names):
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "matplotlib"
            and any(a.name == "pyplot" for a in node.names)
        ):
            return True
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "use":
            if isinstance(node.func.value, ast.Name) and node.func.value.id in ("matplotlib", "mpl"):
                return True
    return False


def test_library_leaves_the_matplotlib_backend_alone() -> None:
    """No pyplot and no ``matplotlib.use`` in the library: figures go through utils.plotting."""
    users = {m for m in MODULES if _uses_global_matplotlib(m)}
    assert not users - set(PYPLOT_EXCEPTIONS), f"use edgeslim.utils.plotting instead: {sorted(users)}"
    assert not set(PYPLOT_EXCEPTIONS) - users, "stale PYPLOT_EXCEPTIONS entries"


def test_docs_name_every_layer() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = [layer for layer, _ in LAYERS if f"`{layer}`" not in text]
    assert not missing, f"docs/architecture.md does not describe the layers {missing}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f():\n    import edgeslim.slim\n", [("edgeslim.slim", False, False)]),
        ("if TYPE_CHECKING:\n    from edgeslim import slim\n", [("edgeslim.slim", True, True)]),
        ("from edgeslim.sparsity.prox import X\n", [("edgeslim.sparsity.prox", False, True)]),
    ],
)
def test_edges_are_read_from_functions_and_type_checking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: list[tuple[str, bool, bool]]
) -> None:
    """The reader itself: imports in functions and under TYPE_CHECKING are seen and marked."""
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    got = [(e.dst, e.type_checking, e.module_level) for e in _edges_of("edgeslim.probe", probe)]
    assert got == expected
