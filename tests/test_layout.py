"""The package's layout as the README states it: every module in the README's table with the
ntklab modules it may import, no import cycle, and each run-folder name and status spelled in
one module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ntklab"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("_"))


def ntklab_imports(module: str) -> set[str]:
    """The ntklab modules `module` imports, at the top or inside a function."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ntklab."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "ntklab":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("ntklab."))
    return found - {module}


def readme_table() -> dict[str, set[str]]:
    """module → the imports the README's layout table allows it."""
    table = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        row = re.match(r"\| `(\w+)` \| .* \| (.*) \|$", line)
        if row and row.group(1) in MODULES:
            allowed = row.group(2)
            everything = "the modules above" in allowed
            table[row.group(1)] = set(MODULES) if everything else set(re.findall(r"\w+", allowed))
    return table


def test_every_module_is_in_the_readme_with_the_imports_it_has():
    table = readme_table()
    assert sorted(table) == MODULES
    for module in MODULES:
        extra = ntklab_imports(module) - table[module]
        assert not extra, f"{module} imports {sorted(extra)}, which the README's table omits"


def test_no_import_cycle():
    graph = {m: ntklab_imports(m) & set(MODULES) for m in MODULES}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " → ".join((*path, module))
        if module not in done:
            for dep in graph[module]:
                visit(dep, (*path, module))
            done.add(module)

    for module in MODULES:
        visit(module, ())


def test_run_folder_names_and_statuses_are_spelled_in_one_module():
    spelled = {
        name: [m for m in MODULES if f'"{name}"' in (PACKAGE / f"{m}.py").read_text()]
        for name in ("summary.json", "metrics.jsonl", "completed", "diverged", "interrupted",
                     "failed", "unfinished", "last.pt", "init.pt", "checkpoints", "tb")
    }  # fmt: skip
    assert all(where == ["rundir"] for where in spelled.values()), spelled
