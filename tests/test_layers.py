"""The package's import graph: layers that only point down, and no cycles.

Read from the source with ``ast`` (function-level imports count; imports under
``if TYPE_CHECKING:`` do not, as they never run). Every module belongs to one
layer; a module may import its own layer and the layers below it, never one
above. Within the package, no import cycle exists, not even through a
function-level import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "flowtracker"

#: Bottom to top. A module's layer is the first whose prefix its dotted name starts with.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("flowtracker._core",)),
    ("wire", ("flowtracker._wire", "flowtracker._graph")),
    ("pipeline", ("flowtracker._pipeline",)),
    ("exporters", ("flowtracker.exporters",)),
    (
        "integrations",
        (
            "flowtracker.integrations",
            "flowtracker.instrumentation",
            "flowtracker.propagation",
            "flowtracker.log_correlation",
            "flowtracker.aiohttp",
            "flowtracker.asgi",
            "flowtracker.testing",
            "flowtracker.otel",
            "flowtracker.instrumentation",
            "flowtracker.loop_monitor",
        ),
    ),
    (
        "viz/cli",
        (
            "flowtracker.viz",
            "flowtracker.serve",
            "flowtracker.cli",
            "flowtracker.demo",
            "flowtracker.__main__",
        ),
    ),
    ("package", ("flowtracker",)),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return rank
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules ``module`` imports at run time (any depth in the file)."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(base: str, names: list[str]) -> None:
        for name in names:
            candidate = f"{base}.{name}" if base else name
            found.add(candidate if candidate in known else base)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("flowtracker"):
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package_parts = module.split(".") if is_package else module.split(".")[:-1]
                if node.level > 1:
                    package_parts = package_parts[: -(node.level - 1)]
                base = ".".join(package_parts)
                if node.module:
                    base = f"{base}.{node.module}"
            else:
                base = node.module or ""
            if base.startswith("flowtracker"):
                resolve(base, [alias.name for alias in node.names])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(module)
    return {name for name in found if name in known}


#: Private names of the standard library read on purpose, each for a reason
#: no public API serves (file, attribute) -> why.
STDLIB_PRIVATES = {
    ("loop_monitor.py", "_loop"): "asyncio.Handle's loop: which loop a callback runs on",
    ("loop_monitor.py", "_context"): "asyncio.Handle's context: whose span a callback runs for",
    ("loop_monitor.py", "_current_frames"): "sys._current_frames(): the only way to sample a blocked thread",
}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def foreign_private_names(path: Path) -> list[str]:
    """Underscored names ``path`` takes from other modules (imports, or attributes it does not define)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defined: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            defined.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
        elif isinstance(node, ast.ClassDef):
            defined.add(node.name)
    for node in ast.walk(tree):  # names listed in __slots__ are defined here too
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__slots__" for target in node.targets
        ):
            defined |= {elt.value for elt in ast.walk(node.value) if isinstance(elt, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = "." * node.level + (node.module or "")
            if not (node.level or source.startswith("flowtracker")):
                continue  # another project's private names: each named and tested where used (otel)
            found += [
                f"{path.name}:{node.lineno}: imports {alias.name} from {source}"
                for alias in node.names
                if _private(alias.name)
            ]
        elif (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and node.attr not in defined
            and (path.name, node.attr) not in STDLIB_PRIVATES
        ):
            owner = ast.unparse(node.value)
            found.append(f"{path.name}:{node.lineno}: reads .{node.attr} of {owner}")
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = all_modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


class TestLayers:
    def test_every_module_has_a_layer(self, graph: dict[str, set[str]]) -> None:
        """Each module of the package is placed in exactly one named layer."""
        for module in graph:
            layer_of(module)

    def test_imports_only_point_down(self, graph: dict[str, set[str]]) -> None:
        """No module imports a module of a higher layer (the package's own __init__ aside)."""
        upward = [
            f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
            for module, targets in sorted(graph.items())
            for target in sorted(targets)
            if target != "flowtracker" and layer_of(target) > layer_of(module)
        ]
        assert upward == []

    def test_no_module_imports_the_package_root(self, graph: dict[str, set[str]]) -> None:
        """Inside the package, nothing imports ``flowtracker`` itself: it is the top of the house."""
        assert sorted(module for module, targets in graph.items() if "flowtracker" in targets) == []

    def test_no_import_cycles(self, graph: dict[str, set[str]]) -> None:
        """The import graph has no cycle, function-level imports included."""
        cycles: list[list[str]] = []
        state: dict[str, int] = {}  # 1: on the stack, 2: done
        stack: list[str] = []

        def walk(module: str) -> None:
            state[module] = 1
            stack.append(module)
            for target in sorted(graph[module]):
                if state.get(target) == 1:
                    cycles.append([*stack[stack.index(target) :], target])
                elif target not in state:
                    walk(target)
            stack.pop()
            state[module] = 2

        for module in sorted(graph):
            if module not in state:
                walk(module)
        assert cycles == []

    def test_core_knows_no_anyio_or_integrations_libraries(self) -> None:
        """The core imports no anyio and no integration library (aiohttp, aiokafka, OpenTelemetry)."""
        forbidden = {"anyio", "aiohttp", "aiokafka", "opentelemetry"}
        for path in (PACKAGE / "_core").rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    roots = {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    roots = {node.module.split(".")[0]}
                else:
                    continue
                assert not roots & forbidden, f"{path.name} imports {roots & forbidden}"

    def test_no_module_touches_another_modules_underscored_names(self) -> None:
        """No ``from x import _name``, and no ``obj._name`` unless this module defines ``_name``."""
        found = []
        for name, path in sorted(all_modules().items()):
            if name.startswith("flowtracker.viz.assets"):
                continue
            found += foreign_private_names(path)
        assert found == []

    def test_the_private_name_checker_sees_a_reach(self, tmp_path: Path) -> None:
        """The checker itself: ``policy._cache`` in a module that defines no ``_cache`` is found."""
        module = tmp_path / "encode.py"
        module.write_text(
            "from .policy import _limit\n"
            "class A:\n    def __init__(self):\n        self._mine = 1\n"
            "def f(policy, a):\n    return policy._cache, a._mine\n",
            encoding="utf-8",
        )
        assert [entry.split(": ", 1)[1] for entry in foreign_private_names(module)] == [
            "imports _limit from .policy",
            "reads ._cache of policy",
        ]

    def test_the_checker_sees_an_upward_import(self, tmp_path: Path) -> None:
        """The checker itself: a function-level import of the pipeline from the core is found."""
        module = tmp_path / "span.py"
        module.write_text("def f():\n    from .._pipeline.tracker import Tracker\n", encoding="utf-8")
        known = {"flowtracker._core.span": module, "flowtracker._pipeline.tracker": module}
        found = imports_of("flowtracker._core.span", module, known)
        assert found == {"flowtracker._pipeline.tracker"}
        assert layer_of("flowtracker._pipeline.tracker") > layer_of("flowtracker._core.span")
