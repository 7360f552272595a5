"""Code a config names: `pkg.module.Name` imported from the installed packages or the working
directory, with errors that name the config key."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
from collections.abc import Iterator


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
