"""The package's layers, read from its source (issue 15; docs/architecture.md).

Every import of the package is walked, the ones inside functions included
(those under ``if TYPE_CHECKING:`` are for annotations only and not run), and
the tests fail on: an import from a higher layer, a cycle between subpackages
or between modules, an underscore name taken from another module, and a
module or class over the size limits (a class's docstring not counted) without
a written reason at its top.
"""

from __future__ import annotations

import ast
import itertools
from dataclasses import dataclass
from pathlib import Path

import pytest

import mixedmodels

PACKAGE = Path(mixedmodels.__file__).parent

# Lowest first. A module may import from its own unit and from units of a lower
# or the same layer; models' kinds (models.lmm, models.glmm, ...) are units of
# their own above models.base.
LAYERS = {
    "exceptions": 0,
    "support": 1,
    "covariance": 2,  # structures of Λ: numpy only (spec's terms hold one)
    "residual": 2,  # residual variance/correlation structures: numpy/scipy/pandas only
    "spec": 3,
    "families": 3,
    "linalg": 4,
    "optim": 5,
    "data": 6,
    "inference": 7,
    "report": 8,
    "models.base": 9,
    "models": 10,  # every model kind
    "datasets": 11,
    "api": 11,
    "cli": 12,
    "__main__": 13,
    "": 14,  # the package's __init__: lazy access to the API
}

MODULE_LINES, CLASS_LINES = 800, 400
SIZE_REASON = "Size:"  # the docstring paragraph that says why a big unit is one


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (absolute)
    name: str | None  # the name taken from it (from-imports), else None
    line: int


def module_name(path: Path) -> str:
    parts = ["mixedmodels", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = modules()


def resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _runtime_nodes(tree: ast.AST):
    """Every node, the bodies of ``if TYPE_CHECKING:`` excepted (names for
    annotations only, never imported when the code runs)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imports_of(module: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[Import] = []
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found += [Import(module, a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, path.name == "__init__.py", node.level, node.module)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:  # `from package import module`
                    found.append(Import(module, sub, None, node.lineno))
                else:
                    found.append(Import(module, target, alias.name, node.lineno))
    return [i for i in found if i.target == "mixedmodels" or i.target.startswith("mixedmodels.")]


ALL_IMPORTS = [i for m, p in MODULES.items() for i in imports_of(m, p)]


def unit(module: str) -> str:
    parts = module.split(".")[1:]
    if not parts:
        return ""
    if parts[0] == "models" and len(parts) > 1:
        return "models.base" if parts[1] == "base" else f"models.{parts[1]}"
    return parts[0]


def layer(module: str) -> int:
    u = unit(module)
    if u.startswith("models.") and u != "models.base":
        return LAYERS["models"]
    return LAYERS[u]


def test_every_module_belongs_to_a_layer():
    unknown = sorted({unit(m) for m in MODULES} - set(LAYERS) - {u for u in map(unit, MODULES) if u.startswith("models.")})
    assert not unknown, f"subpackages without a layer in LAYERS: {unknown}"


def test_no_import_from_a_higher_layer():
    upward = [
        f"{i.module}:{i.line} imports {i.target} (layer {layer(i.target)} above {layer(i.module)})"
        for i in ALL_IMPORTS
        if unit(i.target) != unit(i.module) and layer(i.target) > layer(i.module)
    ]
    assert not upward, "\n".join(upward)


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    graph: dict[str, list[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = itertools.count()

    def visit(v: str) -> None:
        index[v] = low[v] = next(counter)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_no_cycle_between_subpackages():
    edges = {(unit(i.module), unit(i.target)) for i in ALL_IMPORTS if unit(i.module) != unit(i.target)}
    assert _cycles(edges) == []


def test_no_cycle_between_modules():
    def owner(target: str) -> str:
        return target if target in MODULES else target.rsplit(".", 1)[0]

    edges = {
        (i.module, owner(i.target))
        for i in ALL_IMPORTS
        if owner(i.target) != i.module and not i.target == "mixedmodels"
        and not (i.module == "mixedmodels" or owner(i.target) == "mixedmodels")
        and not MODULES[i.module].name == "__init__.py"  # a package exporting its modules' names
    }
    assert _cycles(edges) == []


def test_no_underscore_name_from_another_module():
    private = [
        f"{i.module}:{i.line} takes {i.name or i.target} from {i.target}"
        for i in ALL_IMPORTS
        if i.target != i.module
        and (
            (i.name is not None and i.name.startswith("_") and not i.name.startswith("__"))
            or any(part.startswith("_") and not part.startswith("__") for part in i.target.split("."))
        )
    ]
    assert not private, "\n".join(private)


def _docstring_lines(node: ast.ClassDef) -> int:
    """Lines of a class's docstring: not counted in its size (the docstring
    lists the class's attributes, which the brief asks of every result type)."""
    first = node.body[0] if node.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first.end_lineno - first.lineno + 1
    return 0


def _has_reason(docstring: str | None) -> bool:
    return docstring is not None and SIZE_REASON in docstring


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_and_class_sizes(module):
    path = MODULES[module]
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    lines = text.count("\n")
    if lines > MODULE_LINES:
        assert _has_reason(ast.get_docstring(tree)), (
            f"{module} has {lines} lines (> {MODULE_LINES}) and no '{SIZE_REASON}' reason in its docstring"
        )
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            size = node.end_lineno - node.lineno + 1 - _docstring_lines(node)
            if size > CLASS_LINES:
                assert _has_reason(ast.get_docstring(node)), (
                    f"{module}.{node.name} has {size} lines (> {CLASS_LINES}) and no '{SIZE_REASON}' reason"
                )


def test_the_walk_sees_imports_inside_functions():
    """The walker itself: a lazy import inside a function is an import."""
    lazy = [i for i in ALL_IMPORTS if i.module == "mixedmodels.cli" and i.target.startswith("mixedmodels.")]
    assert lazy, "cli imports the models inside functions: the walk must see them"


def _private_reads(tree: ast.AST) -> list[tuple[int, str]]:
    """Reads of another object's underscore name: ``x._name`` and ``getattr(x, "_name")``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            obj, name = node.value, node.attr
        elif (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr", "delattr") and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
        ):
            obj, name = node.args[0], node.args[1].value
        else:
            continue
        if not name.startswith("_") or name.startswith("__"):
            continue  # public, or a dunder (``__dict__``, ``__name__`` ...)
        if isinstance(obj, ast.Name) and obj.id in ("self", "cls"):
            continue  # an object's own state
        found.append((node.lineno, ast.unparse(node)))
    return found


@pytest.mark.parametrize("subpackage", ["inference", "report"])
def test_inference_and_report_read_no_private_state(subpackage):
    """Inference and report use a model only through the fitted-model protocol.

    They receive models (and other objects: factors, systems, frames) and read
    them by public names only (``inference/protocol.py`` lists a model's): no
    ``x._name`` and no ``getattr(x, "_name")`` (nor hasattr/setattr/delattr)
    on anything but ``self`` / ``cls``. Dunders are not private state.
    """
    private = [
        f"{module}:{line}: {text}"
        for module, path in MODULES.items()
        if module == f"mixedmodels.{subpackage}" or module.startswith(f"mixedmodels.{subpackage}.")
        for line, text in _private_reads(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not private, "\n".join(private)
