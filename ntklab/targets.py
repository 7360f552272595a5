"""Code a config names (model=custom, data=custom): `pkg.module.Name` checked, imported from the
installed packages or the working directory, and called with the +GROUP.KEY=VALUE keyword
arguments; errors name the config key."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import inspect
import os
import sys
from collections.abc import Iterator

from omegaconf import DictConfig, open_dict


@contextlib.contextmanager
def _working_directory_importable() -> Iterator[None]:
    """The `ntklab` script, unlike `python -m ntklab`, does not put the working directory on
    sys.path; a user's module beside their data should import either way."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added:
            sys.path.remove(cwd)


def locate(target: str, key: str, error: type[Exception]) -> object:
    """The object `target` ("pkg.module.Name") names; `error` (naming `key`) when the module
    cannot be found or holds no such name. Errors raised by the module's own code propagate."""
    module_name, _, name = str(target).rpartition(".")
    if not module_name or not name:
        raise error(f"{key}={target!r}: give the module and the name in it, pkg.module.Name")
    try:
        with _working_directory_importable():
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise error(
            f"{key}={target!r}: no module named {err.name!r}; give a module importable from the "
            "working directory or an installed package"
        ) from None
    try:
        return getattr(module, name)
    except AttributeError:
        raise error(f"{key}={target!r}: module {module_name} has no {name!r}") from None


def check_call(fn: object, target: str, key: str, error: type[Exception], **kwargs) -> None:
    """`error` unless `fn` is callable with these keyword arguments (its own errors, raised
    while it runs, are left to propagate)."""
    if not callable(fn):
        raise error(f"{key}={target!r}: is a {type(fn).__name__}, not a class or function")
    try:
        inspect.signature(fn).bind(**kwargs)
    except TypeError as err:
        given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise error(f"{key}={target!r}: cannot be called with {given} ({err})") from None
    except ValueError:  # no signature to inspect (some builtins): the call will tell
        pass


def gather_kwargs(cfg: DictConfig, schemas: dict[str, type]) -> DictConfig:
    """A copy of `cfg` whose keys in each group (`schemas`: group → its dataclass) that the
    schema does not name (+GROUP.KEY=VALUE) are moved into the group's `kwargs`."""
    cfg = copy.deepcopy(cfg)
    for group, schema in schemas.items():
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        known = {f.name for f in dataclasses.fields(schema)}
        with open_dict(node):
            for key in [k for k in node if k not in known]:
                node.kwargs[key] = node.pop(key)
    return cfg


def check_target(
    group: str, name: str, target: str | None, kwargs: dict, error: type[Exception]
) -> None:
    """`GROUP._target_` and extra keys (+GROUP.KEY=VALUE) belong to GROUP=custom, which needs a
    dotted name; `error` (naming the key) otherwise."""
    key, what = f"{group}._target_", "pkg.module." + ("Class" if group == "model" else "function")
    if name == "custom" and not target:
        raise error(f"{key}={target!r}: {group}=custom needs {key}={what}")
    if name == "custom" and not all(part.isidentifier() for part in target.split(".")):
        raise error(f"{key}={target!r}: must name an importable {what}")
    if name != "custom" and target is not None:
        raise error(f"{key}={target!r}: only {group}=custom takes a target")
    for extra, value in kwargs.items() if name != "custom" else ():
        raise error(
            f"{group}.{extra}={value!r}: {group}={name} takes no such key; extra keys "
            f"(+{group}.KEY=VALUE) go to {group}=custom's target"
        )
