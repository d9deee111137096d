"""The rooms' rules that import-linter cannot say, read from the source (DESIGN.md, "Layout (the rooms)").

import-linter checks the contracts in pyproject.toml (the layers in flow order, the target modules' independence,
no cycles between sibling packages); `test_import_contracts_are_kept` runs it. What these tests add, from the AST
of every module under edgekit/:

- no module imports another room's private (`_name`) objects or modules (a room: the first package under edgekit);
- imports sit at the top of modules: inside a function only an optional back-end's own import (LAZY);
- the graph of module-level imports between edgekit's modules has no cycle, however long;
- `import edgekit.cli` loads none of the optional back-ends.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "edgekit"

# The packages a function may import where it needs them, and why they are not at the top of the module. Every
# other import (edgekit's own, the standard library, torch, numpy, pydantic, yaml, typer, rich, ...) is at the top.
LAZY = {
    "executorch": "optional back-end (extra `executorch`), imported when an ExecuTorch artifact is built or run",
    "coremltools": "optional back-end (extra `coreml`), imported when a Core ML artifact is built or run",
    "litert_torch": "optional back-end (extra `tflite`), imported when a TFLite artifact is converted",
    "ai_edge_litert": "optional back-end (extra `tflite`), imported when a TFLite artifact is run",
    "onnx": "optional back-end (extra `onnx`)",
    "onnxruntime": "optional back-end (extra `onnx`), imported when an ONNX artifact is quantized or run",
    "onnxslim": "optional back-end (extra `onnx`)",
    "onnxscript": "optional back-end (extra `onnx`)",
    "torchao": "the PT2E quantization flow, installed with the back-ends",
    "matplotlib": "plotting (~0.3 s to import): only `select` draws (the Pareto plot)",
    "tree_sitter": "dev only: parses the demo apps' sources",
    "sklearn": "~1.1 s to import, for the bundled digits dataset alone",
    "scipy": "~0.3-0.7 s to import, when the latency predictor is fitted",
}
# what `import edgekit.cli` must not load (everything in LAZY but the plain libraries a user has anyway)
BACKENDS = sorted(set(LAZY) - {"sklearn", "scipy"})


@dataclass(frozen=True)
class Import:
    importer: str  # the module (dotted name) the statement is in
    line: int
    module: str  # the module the statement imports from (absolute; a submodule where a name is one)
    names: tuple[str, ...]  # the names taken from it (empty for `import a.b`)
    top: bool  # at module level (not inside a function), `if TYPE_CHECKING:` excluded
    typing_only: bool  # under `if TYPE_CHECKING:`


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _room(module: str) -> str:
    """The room of a module: the first package (or module) under edgekit; '' for the package's facade itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _source(module: str, node: ast.ImportFrom) -> str:
    """The absolute name of the module a `from ... import` statement in `module` imports from."""
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[Import] = []

    def visit(node: ast.AST, top: bool, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(module, child.lineno, alias.name, (), top, typing_only))
            elif isinstance(child, ast.ImportFrom):
                names = tuple(a.name for a in child.names)
                found.append(Import(module, child.lineno, _source(module, child), names, top, typing_only))
            in_function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            in_typing = isinstance(child, ast.If) and _is_type_checking(child)
            visit(child, top and not in_function, typing_only or in_typing)

    visit(tree, True, False)
    return found


IMPORTS = [i for module, path in MODULES.items() for i in _imports(module, path)]


def _targets(i: Import) -> list[tuple[str, tuple[str, ...]]]:
    """The edgekit modules an import reaches, with the names it takes from each (`from . import x`: module x)."""
    if i.module != "edgekit" and not i.module.startswith("edgekit."):
        return []
    if not i.names:
        return [(i.module, ())]
    out: dict[str, tuple[str, ...]] = {}
    for name in i.names:
        sub = f"{i.module}.{name}"
        if sub in MODULES:
            out.setdefault(sub, ())
        else:
            out[i.module] = (*out.get(i.module, ()), name)
    return list(out.items())


def _where(i: Import) -> str:
    return f"{MODULES[i.importer].relative_to(ROOT)}:{i.line}"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_the_sources_are_found():
    assert {"edgekit", "edgekit.cli", "edgekit.compile.registry", "edgekit.prune.graph"} <= MODULES.keys()
    assert len(IMPORTS) > 200


def test_no_room_imports_another_rooms_private_names():
    bad = []
    for i in IMPORTS:
        for target, names in _targets(i):
            if _room(target) == _room(i.importer):
                continue
            private_parts = [p for p in target.split(".")[1:] if _private(p)]
            private_names = [n for n in names if _private(n)]
            if private_parts or private_names:
                bad.append(f"{_where(i)}: {i.importer} takes {', '.join(private_parts + private_names)} from {target}")
    assert not bad, "a room's private names are its own; make it public or move it down a room:\n" + "\n".join(bad)


def _module_aliases(module: str, path: Path) -> dict[str, str]:
    """The names a module binds to other edgekit modules: `import edgekit.x as y`, `from . import recipe as r`."""
    aliases = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            aliases.update({a.asname: a.name for a in node.names if a.asname and a.name in MODULES})
        elif isinstance(node, ast.ImportFrom):
            source = _source(module, node)
            for a in node.names:
                if f"{source}.{a.name}" in MODULES:
                    aliases[a.asname or a.name] = f"{source}.{a.name}"
    return aliases


def test_no_room_uses_another_rooms_private_names_through_a_module():
    """`from . import recipe as recipes`, then `recipes._plan(...)`: the same rule, through an attribute."""
    bad = []
    for module, path in MODULES.items():
        aliases = {k: v for k, v in _module_aliases(module, path).items() if _room(v) != _room(module)}
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                if _private(node.attr):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {aliases[node.value.id]}.{node.attr}")
    assert not bad, "another room's private names, used through its module:\n" + "\n".join(bad)


def test_imports_are_at_the_top_but_an_optional_backends():
    bad = [
        f"{_where(i)}: import of {i.module} inside a function"
        for i in IMPORTS
        if not i.top and i.module.split(".")[0] not in LAZY
    ]
    assert not bad, (
        "imports go at the top of the module; only the optional back-ends (LAZY in this file, with the reason) are "
        "imported where they are used:\n" + "\n".join(bad)
    )


def _module_graph() -> dict[str, set[str]]:
    """module -> the edgekit modules it imports when it is imported (module level, not TYPE_CHECKING)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for i in IMPORTS:
        if not i.top or i.typing_only:
            continue
        for target, _names in _targets(i):
            if target != i.importer:
                graph[i.importer].add(target)
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the graph as a path (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_module_level_imports_have_no_cycle():
    cycle = _find_cycle(_module_graph())
    assert cycle is None, "an import cycle between edgekit's modules: " + " -> ".join(cycle or [])


def test_the_cycle_search_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_room_imports_the_facade():
    """`edgekit/__init__.py` imports every room, so a room that imports `edgekit` itself closes a cycle; the version
    a manifest records comes from `edgekit.version`."""
    bad = [
        f"{_where(i)}: {', '.join(names)}"
        for i in IMPORTS
        for target, names in _targets(i)
        if target == "edgekit" and i.importer != "edgekit"
    ]
    assert not bad, "import from the room that defines it, not from the facade `edgekit`:\n" + "\n".join(bad)


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    proc = subprocess.run([exe, "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "0 broken" in proc.stdout, proc.stdout + proc.stderr


def test_every_target_module_is_in_the_target_contracts():
    """A new target module (CONTRIBUTING.md, "A target") joins the contracts that keep the targets apart."""
    registering = {
        module
        for module, path in MODULES.items()
        if module.startswith("edgekit.compile.") and "\n@register\n" in path.read_text()
    }
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    independent = next(c["modules"] for c in contracts if c["type"] == "independence")
    protected = next(
        c["protected_modules"] for c in contracts if "edgekit.compile.coreml" in c.get("protected_modules", ())
    )
    assert registering == set(independent) == set(protected)


def test_importing_the_cli_loads_no_optional_backend():
    code = (
        "import json, sys; import edgekit, edgekit.cli; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1])) & set(BACKENDS)
    assert not loaded, f"`import edgekit.cli` loads {sorted(loaded)}; import them inside the functions that use them"
