"""The install as a user meets it: the README's Python snippet runs from any folder, even beside
a folder named ntklab (the clone, seen from its parent), and `ntklab --help` imports no torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_snippet() -> str:
    """The README's first Python snippet (the NTK of any nn.Module)."""
    text = (ROOT / "README.md").read_text()
    (snippet,) = [s for s in re.findall(r"```python\n(.*?)```", text, re.S) if "empirical_ntk" in s]
    return snippet


def test_the_readme_snippet_runs_from_the_clones_parent_folder(tmp_path):
    # A folder named ntklab in the current directory is a namespace package to Python; an
    # editable install must still win over it (a plain path entry does, a meta-path finder
    # appended after the path finder does not).
    (tmp_path / "ntklab" / "ntklab").mkdir(parents=True)
    proc = subprocess.run(
        [sys.executable, "-"], cwd=tmp_path,
        input=readme_snippet() + "print(*[tuple(k.shape) for k in (K, K_cross, K_full, K_deep)])",
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(64, 64) (16, 64) (64, 64, 3, 3) (64, 64)"
