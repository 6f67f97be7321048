"""bench/ keeps its shared code in library modules: a bench script imports those, never
another script (a script's `main` and options are its own; what two scripts share lives
in one place), and every script still starts (`--help`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "bench"
# The benches' shared modules: no `main`, imported by the scripts.
LIBRARIES = {"common", "loadgen", "season", "workload"}
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if p.stem not in LIBRARIES)


def bench_imports(path: Path) -> set[str]:
    """The bench modules `path` imports."""
    local = {p.stem for p in BENCH.glob("*.py")}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
    return found & local


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_bench_script_imports_only_the_shared_modules(script: str) -> None:
    assert bench_imports(BENCH / f"{script}.py") <= LIBRARIES


@pytest.mark.parametrize("library", sorted(LIBRARIES))
def test_a_shared_bench_module_is_a_library_not_a_script(library: str) -> None:
    source = (BENCH / f"{library}.py").read_text()
    assert "def main(" not in source
    assert bench_imports(BENCH / f"{library}.py") <= LIBRARIES


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_bench_script_starts_and_explains_itself(script: str) -> None:
    done = subprocess.run([sys.executable, f"{script}.py", "--help"], cwd=BENCH,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
