"""`ntklab --help`: every config group with its options, and every key with its default and a
one-line description, read from the typed schema's source (ntklab/config.py) and the option
files of conf/. Nothing here imports torch or Hydra, so the page answers at once."""

from __future__ import annotations

import ast
import io
import textwrap
import tokenize
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

# The schema's sources: the run's config, and the sweep report's spec that it nests.
SCHEMA = (Path(__file__).with_name("config.py"), Path(__file__).with_name("sweep.py"))
GROUPS = ("model", "data", "optim", "ntk", "experiment", "launcher")
WIDTH = 100
EXIT_STATUS = (
    "Exit status: 0 done (or diverged), 1 a failed run or sweep job, 2 a bad setting or folder "
    "(nothing written), 130/143 interrupted."
)


@dataclass(frozen=True)
class Key:
    """One config key: its dotted name, its default as the command line writes it, and the
    comment beside its field in the schema."""

    name: str
    default: str
    doc: str


def _comments(source: str) -> dict[int, str]:
    """Line number → the comment ending that line."""
    found = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            found[tok.start[0]] = tok.string.lstrip("#").strip()
    return found


def _format(literal: object) -> str:
    """A default as the command line writes it."""
    if literal is None:
        return "null"
    if isinstance(literal, bool):
        return str(literal).lower()
    if isinstance(literal, (list, tuple)):
        return "[" + ", ".join(_format(x) for x in literal) + "]"
    if isinstance(literal, dict):
        return "{" + ", ".join(f"{k}: {_format(v)}" for k, v in literal.items()) + "}"
    return f"{literal:g}" if isinstance(literal, float) else str(literal)


def _factory(call: ast.Call, constants: dict[str, object]) -> str | None:
    """The default a `field(default_factory=...)` makes: dict, list, or `lambda: list(NAME)`
    of a module constant; None for anything else (a nested config)."""
    factory = next((k.value for k in call.keywords if k.arg == "default_factory"), None)
    if isinstance(factory, ast.Name) and factory.id in ("dict", "list"):
        return "{}" if factory.id == "dict" else "[]"
    if isinstance(factory, ast.Lambda):
        body = factory.body
        if isinstance(body, ast.Call) and body.args and isinstance(body.args[0], ast.Name):
            name = body.args[0].id
            if name in constants:
                return _format(list(constants[name]))
        try:
            return _format(ast.literal_eval(body))
        except ValueError:
            return None
    return None


def _default(value: ast.expr | None, constants: dict[str, object]) -> str | None:
    """The field's default as the command line writes it; None for a group's choice (MISSING)
    and for nested configs."""
    if value is None or (isinstance(value, ast.Name) and value.id == "MISSING"):
        return None
    if isinstance(value, ast.Call):
        return _factory(value, constants)
    return _format(ast.literal_eval(value))


def _constants(tree: ast.Module) -> dict[str, object]:
    """The module's constants that are literals (tuples of names and the like)."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                try:
                    found[target.id] = ast.literal_eval(node.value)
                except (ValueError, TypeError, SyntaxError):
                    continue
    return found


def schema_keys(root: str = "Config", source: str | None = None) -> list[Key]:
    """Every key of the schema class `root` and of the configs nested in it, in field order."""
    sources = [source] if source is not None else [p.read_text("utf-8") for p in SCHEMA]
    classes: dict[str, tuple[ast.ClassDef, dict[int, str], dict[str, object]]] = {}
    for text in sources:
        tree, comments = ast.parse(text), _comments(text)
        constants = _constants(tree)
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                classes[node.name] = (node, comments, constants)

    def walk(name: str, prefix: str) -> list[Key]:
        keys: list[Key] = []
        node_class, comments, constants = classes[name]
        for base in node_class.bases:  # a schema that extends another (LRFindConfig)
            if isinstance(base, ast.Name) and base.id in classes:
                keys += walk(base.id, prefix)
        for node in node_class.body:
            if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
                continue
            field, kind = node.target.id, ast.unparse(node.annotation)
            if kind in classes:
                keys += walk(kind, f"{prefix}{field}.")
                continue
            default = _default(node.value, constants)
            if default is not None:
                keys.append(Key(prefix + field, default, comments.get(node.lineno, "")))
        return keys

    return walk(root, "")


def _first_sentence(text: str) -> str:
    """The first sentence of an option file's header comment (its example commands skipped)."""
    words = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line[1:]
        if body.strip().startswith("@package"):
            continue
        if body.startswith("   "):  # an example command ends the first sentence
            if words:
                break
            continue
        words.append(body.strip())
    header = " ".join(words)
    cut = header.find(". ")
    return (header[:cut] if cut > 0 else header).rstrip(".,:;")


def group_options() -> dict[str, list[tuple[str, str]]]:
    """Each config group → its options and the first line of each option file's comment."""
    conf = resources.files("ntklab.conf")
    found = {}
    for group in GROUPS:
        files = sorted(
            (f for f in conf.joinpath(group).iterdir() if f.name.endswith(".yaml")),
            key=lambda f: f.name,
        )
        found[group] = [(f.name[:-5], _first_sentence(f.read_text("utf-8"))) for f in files]
    return found


def default_options() -> dict[str, str]:
    """The option each group takes by default, from the defaults list of conf/config.yaml."""
    chosen = {}
    text = resources.files("ntklab.conf").joinpath("config.yaml").read_text(encoding="utf-8")
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry.startswith("- ") and ":" in entry and "override" not in entry:
            group, option = (s.strip() for s in entry[2:].split(":", 1))
            chosen[group] = option
    return chosen


def _rows(left: str, right: str, col: int, most: int = 3) -> list[str]:
    """`left` from column 2, then `right` from column `col`, wrapped to the page width in at
    most `most` lines."""
    right_lines = textwrap.wrap(right, WIDTH - col, max_lines=most, placeholder=" …") or [""]
    first = "  " + left.ljust(col - 3) + " " + right_lines[0]
    return [first.rstrip()] + [" " * col + line for line in right_lines[1:]]


def page(program: str = "ntklab") -> str:
    """The whole help page."""
    usage = [
        (f"{program} [GROUP=OPTION] [KEY=VALUE] ...", "one run → runs/<date>/<time>_<overrides>/"),
        (f"{program} -m KEY=A,B,C ...", "a sweep, a job per value → runs/multirun/<date>/<time>/"),
        (f"{program} --cfg job [ARGS]", "print the config a command would run, and exit"),
        (f"{program} --hydra-help", "Hydra's own flags (hydra.run.dir=PATH, -m, …)"),
        ("tensorboard --logdir runs", "the dashboards (add --host 127.0.0.1)"),
    ]  # fmt: skip
    lines = [
        f"{program}: neural nets (one hidden layer, deep MLPs, your own nn.Module) trained by",
        "hand-written GD/SGD, watched through their empirical NTK",
        "",
        "Usage",
    ]
    for left, right in usage:
        lines += _rows(left, right, 40)
    lines += ["", "Groups (GROUP=OPTION; * marks the default)"]
    chosen = default_options()
    for group, options in group_options().items():
        for k, (option, doc) in enumerate(options):
            mark = "*" if chosen.get(group) == option else ""
            lines += _rows(f"{group if k == 0 else '':<11} {option}{mark}", doc, 30, most=2)
    lines += ["", "Keys (KEY=VALUE; the default is the schema's, a group option may change it)"]
    keys = schema_keys()
    col = max(len(k.name) for k in keys) + 2
    for key in keys:
        lines += _rows(f"{key.name:<{col - 2}}  {key.default}", key.doc, col + 14)
    lines += ["", *textwrap.wrap(EXIT_STATUS, WIDTH)]
    return "\n".join(lines) + "\n"
