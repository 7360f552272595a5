"""The measured numbers in the docs are what scripts/claims.py prints from the presets now."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "docs" / "experiments.md", ROOT / "docs" / "sweeps.md"]


def _claims():
    spec = importlib.util.spec_from_file_location("claims", ROOT / "scripts" / "claims.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


claims = _claims()


def test_every_block_is_in_a_doc_and_filled() -> None:
    found = {}
    for doc in DOCS:
        found.update(claims.blocks_in(doc.read_text(encoding="utf-8")))
    assert set(found) == set(claims.BLOCKS)
    assert all(body.strip() for body in found.values()), "run scripts/claims.py --write"


def test_a_stale_number_is_caught_and_round_off_in_the_last_digit_is_not() -> None:
    fresh = "κ = 24.487, step 146, loss 1.0e-22, slope −0.711"
    assert claims.differences(fresh, fresh) == []
    assert claims.differences("κ = 24.488, step 147, loss 1.1e-22, slope −0.712", fresh) == []
    assert claims.differences("κ = 24.587, step 146, loss 1.0e-22, slope −0.711", fresh) == [
        "24.587 in the doc, 24.487 now"
    ]
    assert claims.differences("κ = 24.487, step 146, loss 1.0e-22, slope −0.741", fresh) == [
        "−0.741 in the doc, −0.711 now"
    ]
    (words,) = claims.differences("κ = 24.487, step 146, loss 1.0e-22, exponent −0.711", fresh)
    assert words.startswith("the text around the numbers differs")


def test_write_replaces_only_the_blocks_it_has() -> None:
    text = (
        "a\n<!-- claims:x -->\nold\n<!-- /claims:x -->\n"
        "b\n<!-- claims:y -->\nkeep\n<!-- /claims:y -->\n"
    )
    out = claims.replace_blocks(text, {"x": "new 1.5"})
    assert out == text.replace("old", "new 1.5")
    assert claims.blocks_in(out) == {"x": "new 1.5", "y": "keep"}


@pytest.mark.slow
def test_the_docs_say_what_the_presets_measure_now() -> None:
    proc = subprocess.run(
        [sys.executable, "scripts/claims.py", "--check", *map(str, DOCS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
