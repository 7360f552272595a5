"""The install as a user meets it: the README's Python snippet runs from any folder, even beside
a folder named ntklab (the clone, seen from its parent), and `ntklab --help` imports no torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    (snippet,) = [s for s in re.findall(r"```python\n(.*?)```", text, re.S) if "import" in s]
    return snippet


def test_the_readme_snippet_runs_from_the_clones_parent_folder(tmp_path):
    # A folder named ntklab in the current directory is a namespace package to Python; an
    # editable install must still win over it (a plain path entry does, a meta-path finder
    # appended after the path finder does not).
    (tmp_path / "ntklab" / "ntklab").mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, "-"], input=readme_snippet(), cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lam_min, lam_max, resolved = proc.stdout.split()
    assert 0 < float(lam_min) < float(lam_max) and resolved == "True"
