"""`ntklab --help`: every group option and every key with its default and a description, from
the schema's source, answered without importing torch or Hydra."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

from ntklab.config import Config, LRFindConfig
from ntklab.help import group_options, page, schema_keys


def flat_defaults(obj, prefix: str = "") -> dict[str, object]:
    """The schema's keys and defaults, from the dataclasses themselves."""
    found = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            found.update(flat_defaults(value, f"{prefix}{f.name}."))
        elif value != "???":
            found[prefix + f.name] = value
    return found


def test_every_key_has_its_schema_default_and_a_description():
    keys = {k.name: k for k in schema_keys()}
    expected = flat_defaults(Config())
    assert set(keys) == set(expected)
    for name, default in expected.items():
        shown = keys[name].default
        if default is None:
            assert shown == "null", name
        elif isinstance(default, bool):
            assert shown == str(default).lower(), name
        elif isinstance(default, (int, float)):
            assert float(shown) == default, name
        elif isinstance(default, list):
            assert shown == "[" + ", ".join(default) + "]", name
        elif isinstance(default, dict):
            assert default == {} and shown == "{}", name
        else:
            assert shown == default, name
        assert keys[name].doc, f"{name} has no comment in ntklab/config.py"
    lr_find = {k.name for k in schema_keys("LRFindConfig")}
    assert set(flat_defaults(LRFindConfig())) == lr_find


def test_the_page_lists_every_option_and_key_within_100_columns():
    text = page()
    for group, options in group_options().items():
        assert group in text and all(name in text for name, _ in options)
    assert "leaky_relu*" in text and "sphere*" in text and "gd*" in text
    assert "model.width" in text and "512" in text and "m, hidden neurons" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "powered by Hydra" not in text


def test_help_answers_without_importing_torch_or_hydra():
    code = (
        "import sys; sys.argv = ['ntklab', '--help']\n"
        "from ntklab.__main__ import main; main()\n"
        "heavy = [m for m in ('torch', 'hydra', 'omegaconf') if m in sys.modules]\n"
        "print('heavy:', heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "heavy: []" in proc.stderr
    assert proc.stdout == page()
