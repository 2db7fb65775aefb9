"""The layout of docs/architecture.md, enforced on the source (ast, no imports needed):

- the layers: representations and distillation at the bottom (never each other), the app (`studio`) on them,
  the web UI on the app; the tooling that builds and measures the app (`world`, `training`, `measure`) on top,
  beside the UI, and the app never reaches up into it;
- inside the app, its own layers (STUDIO_LAYERS): a module never imports a module of a higher layer;
- no import cycles anywhere, counting imports inside functions too;
- no private names imported across modules (a shared helper gets a public name in a shared module);
- every "module:Name" registry string points at something that exists;
- importing a package (but the world's SDFs), `studio --help` and `studio-bench --help` never import torch; the runtime never imports the world.
"""
from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ["representations", "distillation", "studio", "ui"]
TOOLING = ["world", "training", "measure"]
PACKAGES = APP + TOOLING

MAY_IMPORT = {
    "representations": set(),
    "distillation": set(),
    "studio": {"representations", "distillation"},
    "ui": {"studio", "representations", "distillation"},
    "world": {"studio", "representations"},
    "training": {"world", "studio", "representations", "distillation"},
    "measure": {"world", "studio", "representations", "distillation"},
}
"""Which project packages each package may import (anything else is an upward or sideways import)."""

LAUNCHERS = {("studio.cli", "ui.server")}
"""The one exception: `studio ui` launches the web UI (and reads its flags), importing it inside functions only."""

STUDIO_LAYERS = [
    {"errors", "paths", "tomlcodec", "limits", "events", "rundir", "media", "vocabulary", "guard"},
    {"sampling", "config", "memory", "models", "checkpoint", "export", "splat", "threads"},
    {"prompts", "previews", "assets", "resume", "reexport"},
    {"run"},
    {"progress", "jobs", "batch"},
    {"cli"},
]
"""The app's layers, bottom first, by the module's first name under studio/ (studio/export/* is `export`). A module
imports only from its own layer or below. A studio module missing here fails the test: place it."""


# ---- the import graph ------------------------------------------------------------------------------------------
def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, modules: dict[str, Path], module_level_only: bool = False) -> set[str]:
    """The project modules `name` imports (relative imports resolved; `from pkg import mod` counts mod)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else ast.walk(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]  # `import a.b.c` of a package path, or a name inside a module
            if t and t != name:
                found.add(t)
    return found


def import_graph(module_level_only: bool = False) -> dict[str, set[str]]:
    modules = source_modules()
    return {m: imports_of(m, p, modules, module_level_only) for m, p in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def top(module: str) -> str:
    return module.split(".")[0]


def studio_layer(module: str) -> int:
    """The layer of a studio module (its first name under studio/); the package itself is the bottom."""
    parts = module.split(".")
    if len(parts) == 1:
        return 0
    for i, layer in enumerate(STUDIO_LAYERS):
        if parts[1] in layer:
            return i
    raise AssertionError(f"{module} is in no STUDIO_LAYERS entry; add it to the layer it belongs to")


# ---- the rules -------------------------------------------------------------------------------------------------
def test_no_import_cycles():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_downwards(package):
    graph = import_graph()
    bad = sorted(f"{m} imports {d}" for m, deps in graph.items() if top(m) == package for d in deps
                 if top(d) != package and top(d) not in MAY_IMPORT[package] and (m, d) not in LAUNCHERS)
    assert bad == []


def test_the_launcher_imports_the_ui_lazily():
    eager = import_graph(module_level_only=True)
    for module, target in LAUNCHERS:
        assert target not in eager[module], f"{module} must import {target} inside the command only"


def test_studio_modules_import_only_their_layer_or_below():
    graph = import_graph()
    bad = sorted(f"{m} (layer {studio_layer(m)}) imports {d} (layer {studio_layer(d)})"
                 for m, deps in graph.items() if top(m) == "studio"
                 for d in deps if top(d) == "studio" and studio_layer(d) > studio_layer(m))
    assert bad == []


def test_no_private_names_cross_modules():
    modules = source_modules()
    bad = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                if private and (node.level or top(node.module or "") in PACKAGES):
                    bad.append(f"{name} imports {private} from {'.' * node.level}{node.module or package}")
    assert bad == []


REGISTRY_STRING = re.compile(rf"^(?:{'|'.join(PACKAGES)})(?:\.\w+)*:\w+$")


def registry_strings() -> list[tuple[str, str]]:
    """(module, "pkg.mod:Name") for every string constant of that shape in the project's source."""
    found = []
    for name, path in source_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and REGISTRY_STRING.match(node.value):
                found.append((name, node.value))
    return found


def test_every_registry_string_resolves():
    strings = registry_strings()
    assert len(strings) >= 10, strings  # the representation and distillation registries at least
    missing = []
    for where, target in strings:
        module, _, attr = target.partition(":")
        try:
            getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            missing.append(f"{where}: {target} ({e})")
    assert missing == []


def test_registry_kinds_match_their_configs():
    import distillation
    import representations

    for registry, get in [(representations.REGISTRY, representations.get), (distillation.REGISTRY, distillation.get)]:
        for kind in registry:
            assert get(kind).Config().kind == kind


def test_the_checks_see_what_they_check(tmp_path):
    """The detectors on a planted cycle, an upward import and a private import (else the rules could be vacuous)."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\nfrom .b import _secret\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.a import x\n_secret = 1\n")
    modules = {"pkg": pkg / "__init__.py", "pkg.a": pkg / "a.py", "pkg.b": pkg / "b.py"}
    graph = {m: imports_of(m, p, modules) for m, p in modules.items()}
    assert graph["pkg.a"] == {"pkg", "pkg.b"} and graph["pkg.b"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
    assert imports_of("pkg.b", pkg / "b.py", modules, module_level_only=True) == set()
    assert REGISTRY_STRING.match("representations.nerf:NeRF") and not REGISTRY_STRING.match("numpy.linalg:norm")


# ---- torch-free imports, a world-free runtime ----------------------------------------------------------------
def run_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_help_does_not_import_torch():
    assert run_python(
        "import sys\n"
        "from studio.cli import main\n"
        "from measure.cli import main as bench\n"
        "for cli, argv in [(main, ['--help']), (main, ['generate', '--help']), (main, ['ui', '--help']), (bench, ['--help'])]:\n"
        "    try:\n        cli(argv)\n    except SystemExit:\n        pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'GRADIO' if 'gradio' in sys.modules else 'CLEAN')\n") == "CLEAN"


@pytest.mark.parametrize("package", APP + ["training", "measure"])  # world/ is its SDFs, torch through and through
def test_package_import_has_no_torch(package):
    assert run_python(f"import sys, {package}; print('TORCH' if 'torch' in sys.modules else 'CLEAN')") == "CLEAN"


WORLD_FREE = ["studio.run", "studio.models", "studio.vocabulary", "studio.cli", "ui.app"]
"""The runtime: the tooling (the procedural world, the trainers, the benchmarks) stays out of it, even
transitively; the prompt checks read the model folder's vocabulary.json instead."""


def test_runtime_does_not_import_the_tooling():
    assert run_python(
        "import sys, importlib\n"
        f"for m in {WORLD_FREE!r}:\n    importlib.import_module(m)\n"
        "from studio.models import embedded_prompt_warning\n"
        "embedded_prompt_warning('a ceramic mug on top of two red cubes')\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {TOOLING!r}) or 'CLEAN')\n") == "CLEAN"


def test_vocabulary_module_has_no_torch():
    assert run_python("import sys\nfrom studio.vocabulary import check_prompt\ncheck_prompt(' '.join(['word'] * 100))\n"
                      "print('TORCH' if 'torch' in sys.modules else 'CLEAN')") == "CLEAN"
