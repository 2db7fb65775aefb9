"""The import direction of design.md, enforced:
ui -> studio -> {representations, distillation} -> torch; representations and distillation never
import each other; nothing imports ui; `studio --help` does not import torch."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "representations": {"distillation", "studio", "ui"},
    "distillation": {"representations", "studio", "ui"},
    "studio": {"ui", "world", "training", "measure"},
    "ui": {"world", "training", "measure"},
    "world": {"training", "measure", "ui"},
    "training": {"measure", "ui"},
    "measure": {"training", "ui"},
}
LAUNCHERS = {"studio/cli.py": {"ui"}}
"""The one exception: the CLI's `studio ui` command launches the web UI, importing it inside the command only."""


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_top_levels(path) & FORBIDDEN[package]
        rel = path.relative_to(ROOT).as_posix()
        if rel in LAUNCHERS:
            assert not module_level_imports(path) & LAUNCHERS[rel], f"{rel} must import the UI lazily"
            bad -= LAUNCHERS[rel]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert not offenders, offenders


def module_level_imports(path: Path) -> set[str]:
    """Top-level package names imported at module level (not inside functions)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_detector_sees_a_forbidden_import(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import os\nfrom distillation.sds import SDS\n")
    assert "distillation" in imported_top_levels(f)


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from studio.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "try:\n    main(['generate', '--help'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'CLEAN')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "CLEAN"


@pytest.mark.parametrize("package", ["representations", "distillation", "studio"])
def test_package_import_has_no_torch(package):
    code = f"import sys, {package}; print('TORCH' if 'torch' in sys.modules else 'CLEAN')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "CLEAN"


WORLD_FREE = ["studio.run", "studio.models", "studio.vocabulary"]
"""The runtime: the procedural world (world, tooling for the embedded model) stays out of it, even
transitively; the prompt checks read the model folder's vocabulary.json instead."""


def test_runtime_does_not_import_the_world():
    code = (
        "import sys, importlib\n"
        f"for m in {WORLD_FREE!r}:\n    importlib.import_module(m)\n"
        "from studio.models import embedded_prompt_warning\n"
        "embedded_prompt_warning('a ceramic mug on top of two red cubes')\n"
        "print(sorted(m for m in sys.modules if m.startswith(('world.', 'training', 'measure')) or m == 'world') or 'CLEAN')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "CLEAN"


def test_vocabulary_module_has_no_torch():
    code = ("import sys\nfrom studio.vocabulary import check_prompt\ncheck_prompt(' '.join(['word'] * 100))\n"
            "print('TORCH' if 'torch' in sys.modules else 'CLEAN')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().splitlines()[-1] == "CLEAN"
