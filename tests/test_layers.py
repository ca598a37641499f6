"""The package's import graph: layers that only point down, and no cycles; runtime patches in one place.

Read from the source with ``ast`` (function-level imports count; imports under
``if TYPE_CHECKING:`` do not, as they never run). Every module belongs to one
layer; a module may import its own layer and the layers below it, never one
above. Within the package, no import cycle exists, not even through a
function-level import.

Every runtime patch (an assignment to another module's or a class's
attribute, ``setattr``) goes through the patch registry,
``flowtracker/_core/patches.py``, with its reason.
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
            "flowtracker.loop_monitor",
        ),
    ),
    ("viz/cli", ("flowtracker.viz", "flowtracker.cli", "flowtracker.demo", "flowtracker.__main__")),
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


#: Private names of the standard library (or, where named, another project)
#: read on purpose, each for a reason no public API serves (file, attribute) -> why.
FOREIGN_PRIVATES = {
    ("_callbacks.py", "_loop"): "asyncio.Handle's loop: which loop a callback runs on",
    ("_callbacks.py", "_context"): "asyncio.Handle's context: whose span a callback runs for",
    ("_watchdog.py", "_current_frames"): "sys._current_frames(): the only way to sample a blocked thread",
    ("_context.py", "_RUNTIME_CONTEXT"): (
        "OpenTelemetry's runtime context, which the bridge wraps (pinned by "
        "tests/test_otel_api.py::TestOpenTelemetryInternals)"
    ),
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
            and (path.name, node.attr) not in FOREIGN_PRIVATES
        ):
            owner = ast.unparse(node.value)
            found.append(f"{path.name}:{node.lineno}: reads .{node.attr} of {owner}")
    return found


#: The one module that may assign another module's or a class's attributes.
REGISTRY = "_core/patches.py"

#: Modules that pass on a reason given elsewhere as a literal (file -> where it is given).
REASON_FORWARDERS = {
    "instrumentation/_patch.py": "Patches(library, reason): each instrumentation gives its reason",
}

#: Calls that register a patch: the registry's two functions, and the instrumentations' Patches.
REGISTERING_CALLS = ("patch_attribute", "patch_hook", "Patches")


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def raw_patches(path: Path) -> list[str]:
    """Assignments to another module's or a class's attributes in ``path``, outside the registry.

    Found: ``mod.attr = ...``, ``mod.Class.attr = ...`` (``mod`` imported),
    ``Class.attr = ...`` inside a function (a class of this module changed at
    run time), ``del`` of such an attribute, and every ``setattr()`` or
    ``delattr()`` call. Not found: ``self.x = ...`` and other local objects, and
    ``Class.attr = ...`` at module level (part of defining the class).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: set[str] = set()
    classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {alias.asname or alias.name for alias in node.names}
    found: list[str] = []

    def check(target: ast.expr, node: ast.stmt, in_function: bool) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                check(element, node, in_function)
            return
        if not isinstance(target, ast.Attribute):
            return
        root = _root_name(target.value)
        if root in imported or (root in classes and in_function):
            found.append(f"{path.name}:{node.lineno}: assigns {ast.unparse(target)}")

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function = True
        if isinstance(node, ast.Assign):
            for target in node.targets:
                check(target, node, in_function)
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            check(node.target, node, in_function)
        elif isinstance(node, ast.Delete):
            for target in node.targets:
                check(target, node, in_function)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("setattr", "delattr")
        ):
            found.append(f"{path.name}:{node.lineno}: calls {node.func.id}()")
        for child in ast.iter_child_nodes(node):
            visit(child, in_function)

    visit(tree, False)
    return found


def registrations(path: Path) -> list[tuple[str, ast.expr | None]]:
    """Each call in ``path`` that registers a patch: ``(where, its reason argument or None)``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name not in REGISTERING_CALLS:
            continue
        reason = next((keyword.value for keyword in node.keywords if keyword.arg == "reason"), None)
        if reason is None and name == "Patches" and len(node.args) >= 2:
            reason = node.args[1]
        found.append((f"{path.name}:{node.lineno}: {name}()", reason))
    return found


def _literal_text(node: ast.expr | None) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and bool(node.value.strip())
    return isinstance(node, ast.JoinedStr)


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


class TestRuntimePatches:
    def test_every_patch_goes_through_the_registry(self) -> None:
        """No module but the registry assigns another module's or a class's attributes, or calls
        setattr()/delattr(): every runtime patch is installed (and undone) by the registry."""
        found = []
        for path in sorted(PACKAGE.rglob("*.py")):
            if path.relative_to(PACKAGE).as_posix() != REGISTRY:
                found += raw_patches(path)
        assert found == []

    def test_every_registration_gives_its_reason(self) -> None:
        """Each patch_attribute(), patch_hook() and Patches() call names its reason as text, where
        it is written (a module that passes on a reason given elsewhere is named in REASON_FORWARDERS)."""
        missing = []
        seen = 0
        for path in sorted(PACKAGE.rglob("*.py")):
            relative = path.relative_to(PACKAGE).as_posix()
            if relative == REGISTRY:
                continue
            for where, reason in registrations(path):
                seen += 1
                if not (_literal_text(reason) or (reason is not None and relative in REASON_FORWARDERS)):
                    missing.append(where)
        assert missing == []
        assert seen >= 6  # Span.__exit__, Handle._run, _RUNTIME_CONTEXT, and the instrumentations'

    def test_the_patch_checker_sees_a_patch(self, tmp_path: Path) -> None:
        """The checker itself: module and class attributes assigned at run time, setattr() and del
        are found; instance attributes and a class's own definition are not."""
        module = tmp_path / "hook.py"
        module.write_text(
            "import asyncio\n"
            "from asyncio import events\n"
            "class Span:\n    pass\n"
            "Span.__module__ = 'x'\n"
            "def install(self, handle, run):\n"
            "    events.Handle._run = run\n"
            "    asyncio.events.Handle._run, self.old = run, None\n"
            "    Span.__exit__ = run\n"
            "    setattr(handle, 'x', 1)\n"
            "    del events.Handle._run\n"
            "    handle.done = True\n",
            encoding="utf-8",
        )
        assert [entry.split(": ", 1)[1] for entry in raw_patches(module)] == [
            "assigns events.Handle._run",
            "assigns asyncio.events.Handle._run",
            "assigns Span.__exit__",
            "calls setattr()",
            "assigns events.Handle._run",
        ]

    def test_the_reason_checker_sees_a_missing_reason(self, tmp_path: Path) -> None:
        """The checker itself: a registration without a reason, or with an empty one, is found."""
        module = tmp_path / "patching.py"
        module.write_text(
            "patch_attribute(a, 'b', c, reason='why')\n"
            "patch_attribute(a, 'b', c)\n"
            "patches.patch_hook('t', f, g, reason=' ')\n"
            "Patches('httpx', 'a span per request')\n",
            encoding="utf-8",
        )
        assert [_literal_text(reason) for _, reason in registrations(module)] == [True, False, False, True]


ARCHITECTURE = PACKAGE.parent / "docs" / "architecture.md"


def layer_table() -> dict[str, str]:
    """docs/architecture.md's layer table: layer name (spaces removed) -> the row's text."""
    rows: dict[str, str] = {}
    for line in ARCHITECTURE.read_text(encoding="utf-8").split("\n## ", 1)[0].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 4 and cells[0] not in ("layer", "---"):
            rows[cells[0].replace(" ", "")] = line
    return rows


def top_level_entries() -> dict[str, str]:
    """Each top-level module and folder of the package, as the table writes it -> its dotted name."""
    entries = {}
    for path in sorted(PACKAGE.iterdir()):
        if path.is_dir() and any(path.glob("*.py")):
            entries[f"`flowtracker/{path.name}/`"] = f"flowtracker.{path.name}"
        elif path.suffix == ".py" and path.name != "__init__.py":
            entries[f"`{path.name}`"] = f"flowtracker.{path.stem}"
    return entries


class TestArchitectureDoc:
    def test_every_top_level_module_and_folder_is_in_its_layers_row(self) -> None:
        """docs/architecture.md's table names every top-level module and folder of the package, in
        the row of the layer it belongs to here: a new one, or one that moved, fails until the
        table says so."""
        rows = layer_table()
        assert set(rows) == {name for name, _ in LAYERS[:-1]}
        misplaced = [
            f"{written} ({LAYERS[layer_of(module)][0]})"
            for written, module in top_level_entries().items()
            if written not in rows[LAYERS[layer_of(module)][0]]
        ]
        assert misplaced == []

    def test_every_package_folder_has_an_init(self) -> None:
        """Every folder of the package with Python modules is a regular package (no namespace folders)."""
        folders = {path.parent for path in PACKAGE.rglob("*.py")}
        assert sorted(str(f.relative_to(PACKAGE)) for f in folders if not (f / "__init__.py").exists()) == []


class TestDoctests:
    def test_the_suite_runs_every_docstring_example(self, pytestconfig: pytest.Config) -> None:
        """The suite's configuration collects the package's doctests (--doctest-modules, with
        flowtracker in testpaths): a stale example fails ./dev test and the tox runs."""
        assert "--doctest-modules" in pytestconfig.getini("addopts")
        assert "flowtracker" in pytestconfig.getini("testpaths")

    def test_no_example_is_skipped(self) -> None:
        """No docstring example in the package is marked +SKIP: every one of them runs."""
        skipped = [
            f"{path.relative_to(PACKAGE)}:{number}"
            for path in sorted(PACKAGE.rglob("*.py"))
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if "doctest: +" + "SKIP" in line
        ]
        assert skipped == []
