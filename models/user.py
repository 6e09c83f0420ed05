"""The user's own model: ``--model PATH.py:FUNCTION`` or ``--model package.module:FUNCTION``.

The function is called as the zoo builders are, with the data's shape and the
``--model-option`` pairs::

    def FUNCTION(inputs: ModelInputs, **options: str) -> torch.nn.Module

``inputs`` has ``input_shape`` (one example, no batch axis), ``num_classes``
(for a ``language_model`` task: the vocabulary size) and ``task``;
``options`` are the ``--model-option KEY=VALUE`` pairs with their values as
the strings given (the function parses them; unknown keys are its to refuse).

A ``PATH.py`` is loaded on its own under a private module name (its directory
is not put on ``sys.path``); a ``package.module`` must be importable (installed,
or on ``PYTHONPATH``). Every rank builds the model; rank 0's parameters are
then broadcast, so the function needs no seeding of its own.

Whatever goes wrong in the user's code (missing file, SyntaxError, ImportError,
missing function, the function raising, a result that is not an nn.Module)
becomes one ValueError line naming the file or module, the function, the error
type and its message: the trainer turns that into a single usage error (exit 2)
instead of a traceback from every rank.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from . import ModelInputs

SEPARATOR = ":"
PRIVATE_PREFIX = "_adacomp_user_model_"


def is_user_model(name: str) -> bool:
    """A zoo name never contains ':'; a user model always does."""
    return SEPARATOR in name


def split_spec(spec: str) -> tuple[str, str]:
    """``(source, function)`` of ``SOURCE:FUNCTION``; ValueError if either is empty."""
    source, _, function = spec.rpartition(SEPARATOR)
    if not source or not function.isidentifier():
        raise ValueError(f"model {spec!r}: expected PATH.py:FUNCTION or package.module:FUNCTION")
    return source, function


def is_file_source(source: str) -> bool:
    """``PATH.py`` (or anything with a path separator) is a file, else a module path."""
    return source.endswith(".py") or "/" in source or "\\" in source


def describe(source: str) -> str:
    """How messages name the source: ``model file my_net.py`` / ``model module pkg.net``."""
    return f"model file {source}" if is_file_source(source) else f"model module {source}"


def error_text(error: BaseException) -> str:
    """``Type: first line of the message``; a SyntaxError says its line, not its path
    (the message already names the file)."""
    if isinstance(error, SyntaxError) and error.msg:
        where = f" (line {error.lineno})" if error.lineno else ""
        return f"{type(error).__name__}: {error.msg}{where}"
    message = str(error).splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _private_name(path: Path) -> str:
    """One module name per file, so two user files never replace each other."""
    return PRIVATE_PREFIX + hashlib.sha256(str(path).encode()).hexdigest()[:16]


def _load_file(source: str) -> ModuleType:
    """Execute ``source`` as a fresh module (re-read on every call: it may have changed).

    It is registered in ``sys.modules`` while it runs because dataclasses and
    typing look their module up there.
    """
    path = Path(source).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError("no such file")
    name = _private_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError("cannot load it as Python source")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _load_source(source: str) -> ModuleType:
    return _load_file(source) if is_file_source(source) else importlib.import_module(source)


def load_builder(source: str, function: str) -> Callable[..., object]:
    """The user's ``function`` from ``source``; ValueError (one line) if it cannot be had."""
    try:
        module = _load_source(source)
    except Exception as error:
        raise ValueError(f"{describe(source)}: {error_text(error)}") from None
    builder = getattr(module, function, None)
    if builder is None:
        raise ValueError(f"{describe(source)}: no function {function!r}")
    if not callable(builder):
        kind = type(builder).__name__
        raise ValueError(f"{describe(source)}: {function!r} is not callable (type {kind})")
    return builder


def build_user_model(
    spec: str, inputs: ModelInputs, options: Mapping[str, str] | None = None
) -> nn.Module:
    """``FUNCTION(inputs, **options)`` from ``spec``, checked to be an nn.Module."""
    source, function = split_spec(spec)
    builder = load_builder(source, function)
    try:
        model = builder(inputs, **dict(options or {}))
    except Exception as error:
        raise ValueError(f"{describe(source)}: {function}() raised {error_text(error)}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"{describe(source)}: {function}() returned {type(model).__name__}, "
            "not a torch.nn.Module"
        )
    return model


def _source_file(source: str) -> Path | None:
    """The file whose code defines the model: the PATH.py, or the module's origin."""
    if is_file_source(source):
        return Path(source).expanduser()
    try:
        found = importlib.util.find_spec(source)
    except (ImportError, ValueError):
        return None
    origin = getattr(found, "origin", None)
    return Path(origin) if origin and Path(origin).is_file() else None


def user_model_digest(spec: str) -> str | None:
    """SHA-256 (hex) of the user model's source file, so a resume notices a changed
    model; None for a zoo model, or a module with no file of its own. Only that one
    file is hashed, not what it imports."""
    if not is_user_model(spec):
        return None
    source, _ = split_spec(spec)
    path = _source_file(source)
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise ValueError(f"{describe(source)}: {error_text(error)}") from None
