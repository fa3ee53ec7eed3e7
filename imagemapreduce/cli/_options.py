"""Turning command-line text into values: sizes, scheduler addresses, mappers and config fields."""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when used: --help must not wait for pex_config and the engine
    import lsst.pex.config as pexConfig

    from ..mapper import ImageMapper

__all__ = [
    "BUILTIN_MAPPERS",
    "CliError",
    "Pair",
    "border_argument",
    "builtin_mapper",
    "hdu_argument",
    "key_value",
    "import_object",
    "pair_argument",
    "positive_float",
    "positive_int",
    "resolve_mapper",
    "scheduler_argument",
    "set_config_field",
    "size_argument",
]


class CliError(Exception):
    """A problem with what the user asked for, reported as one line and exit status 2."""


#: Built-in mappers by name: (module, class). Imported only when chosen, to keep start-up quick.
BUILTIN_MAPPERS: dict[str, tuple[str, str]] = {
    "gaussian": ("imagemapreduce.builtin_mappers", "GaussianSmoothMapper"),
    "median": ("imagemapreduce.builtin_mappers", "MedianFilterMapper"),
    "background": ("imagemapreduce.builtin_mappers", "BackgroundSubtractMapper"),
    "identity": ("imagemapreduce.builtin_mappers", "IdentityMapper"),
    "psfmatch": ("imagemapreduce.psfmatch.homogenize", "PsfMatchMapper"),
    "detect": ("imagemapreduce.detect", "DetectMapper"),
}

#: Local scheduler names a command line can use: the engine's ``SCHEDULER_NAMES`` but
#: "distributed", which needs a client object (an address connects one). Written out rather than
#: imported, so that parsing the command line does not load the engine.
LOCAL_SCHEDULERS = ("multiprocessing", "processes", "single-threaded", "sync", "synchronous", "threading", "threads")
_ADDRESS = re.compile(r"^(?P<protocol>tcp|tls)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class Pair:
    """An (x, y) pair of sizes, from ``"64"`` (both) or ``"64x32"``."""

    x: float
    y: float

    def __str__(self) -> str:
        return f"{self.x:g}" if self.x == self.y else f"{self.x:g}x{self.y:g}"


def pair_argument(text: str) -> Pair:
    """Parse ``N`` or ``NxM`` into a `Pair` of positive numbers (argparse type)."""
    parts = text.lower().split("x")
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or not all(v > 0 and v != float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"expected a positive number, or WxH such as 64x32, got {text!r}")
    return Pair(values[0], values[-1])


def border_argument(text: str) -> Pair | str:
    """Parse a border: a `Pair` as `pair_argument`, or ``auto`` (the mapper's reach) (argparse type)."""
    if text.strip().lower() == "auto":
        return "auto"
    return pair_argument(text)


def hdu_argument(text: str) -> int | str:
    """Parse a FITS extension: a number (0 the primary HDU) or a name such as ``SCI`` (argparse type)."""
    text = text.strip()
    if not text:
        raise argparse.ArgumentTypeError("expected an HDU number or name, got ''")
    if text.lstrip("-").isdigit():
        if int(text) < 0:
            raise argparse.ArgumentTypeError(f"expected an HDU number of at least 0, got {text!r}")
        return int(text)
    return text


def size_argument(text: str) -> tuple[int, int]:
    """Parse an image size ``WxH`` (or ``N`` for a square) in whole pixels (argparse type)."""
    pair = pair_argument(text)
    if pair.x != int(pair.x) or pair.y != int(pair.y):
        raise argparse.ArgumentTypeError(f"expected whole pixels such as 1024 or 2048x1024, got {text!r}")
    return int(pair.x), int(pair.y)


def positive_int(text: str) -> int:
    """Parse an integer of at least 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """Parse a finite number above 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def at_least(minimum: int) -> Callable[[str], int]:
    """Return an argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer of at least {minimum}, got {text!r}")
        return value

    return parse


def scheduler_argument(text: str) -> str:
    """Check a scheduler: a local scheduler name or a ``tcp://HOST:PORT`` address (argparse type)."""
    if "://" in text:
        match = _ADDRESS.match(text)
        if match is None or not 0 < int(match["port"]) < 65536:
            raise argparse.ArgumentTypeError(
                f"bad scheduler address {text!r}: use tcp://HOST:PORT (or tls://), e.g. tcp://127.0.0.1:8786"
            )
        return text
    if text.lower() not in LOCAL_SCHEDULERS:
        raise argparse.ArgumentTypeError(
            f"unknown scheduler {text!r}: use synchronous, threads, processes, or a cluster address tcp://HOST:PORT"
        )
    return text.lower()


def key_value(text: str) -> tuple[str, str]:
    """Split ``KEY=VALUE`` (argparse type); the value may be empty, the key may not."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


# -- mappers ---------------------------------------------------------------------------------------


def builtin_mapper(name: str) -> type[ImageMapper]:
    """Return a built-in mapper class by name."""
    module, cls = BUILTIN_MAPPERS[name]
    return getattr(importlib.import_module(module), cls)


def resolve_mapper(spec: str) -> type[ImageMapper]:
    """Return the mapper class named by a built-in name or ``package.module:Class``.

    The current directory is searched for the module too, as ``python -m`` would, so a mapper in
    ``./mymapper.py`` is ``mymapper:MyMapper``.
    """
    from ..mapper import ImageMapper

    if spec.lower() in BUILTIN_MAPPERS:
        return builtin_mapper(spec.lower())
    if ":" not in spec:
        raise CliError(f"unknown mapper {spec!r}: use one of {', '.join(BUILTIN_MAPPERS)}, or package.module:Class")
    cls = import_object(spec, "--mapper", "Class")
    if not (isinstance(cls, type) and issubclass(cls, ImageMapper)):
        raise CliError(f"--mapper {spec!r} is not an ImageMapper subclass")
    return cls


def import_object(spec: str, option: str, what: str = "NAME") -> Any:
    """Return the object named by ``package.module:NAME`` (``NAME`` may be dotted) for ``option``.

    The current directory is searched for the module too, as ``python -m`` would, so that an
    object in ``./mine.py`` is ``mine:NAME``.
    """
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise CliError(f"{option} {spec!r}: expected package.module:{what}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import module {module_name!r} for {option} {spec!r}: {exc}") from None
    value: Any = module
    for part in name.split("."):
        value = getattr(value, part, None)
        if value is None:
            raise CliError(f"module {module_name!r} has no {name!r} (from {option} {spec!r})")
    return value


# -- config fields ---------------------------------------------------------------------------------

_TRUE, _FALSE = {"true", "yes", "on", "1", "t", "y"}, {"false", "no", "off", "0", "f", "n"}


def set_config_field(config: pexConfig.Config, key: str, text: str, what: str = "--config") -> None:
    """Set the field ``key`` (dotted for sub-configurations) of ``config`` from command-line text.

    The text is converted to the field's type (bool, int, float, str, lists as comma-separated
    items, ``None`` for optional fields); pex_config then checks the type, the allowed choices and
    the field's own check, raising `lsst.pex.config.FieldValidationError` (a `ValueError`).
    """
    import lsst.pex.config as pexConfig

    target, name = _walk(config, key, what)
    field = target._fields[name]
    if isinstance(field, (pexConfig.ConfigField, pexConfig.ConfigurableField, pexConfig.ConfigChoiceField)):
        raise CliError(f"{what} {key!r} is a sub-configuration; set its fields: {key}.FIELD=VALUE")
    try:
        value = _convert(field, text)
    except (ValueError, SyntaxError):
        kind = getattr(field, "itemtype", None) or field.dtype
        raise CliError(f"{what} {key}={text!r}: expected {_describe(field, kind)}") from None
    try:
        setattr(target, name, value)
    except pexConfig.FieldValidationError as exc:
        # pex_config's message names the field's path and source file; keep the reason and say what it is.
        reason = str(exc).split("\nFor more information")[0].split("failed validation: ", 1)[-1]
        reason = " ".join(reason.split()).rstrip(".")
        raise CliError(f"{what} {key}={text}: {reason}. {name}: {field.doc.rstrip('.')}") from None


def _walk(config: pexConfig.Config, key: str, what: str) -> tuple[pexConfig.Config, str]:
    """Return the (sub-)config holding the last part of a dotted key, and that part."""
    import lsst.pex.config as pexConfig

    *path, name = key.split(".")
    target = config
    for part in path:
        _check_known(target, part, key, what)
        field = target._fields[part]
        if isinstance(field, pexConfig.ConfigurableField):
            target = getattr(target, part).value
        elif isinstance(field, pexConfig.ConfigField):
            target = getattr(target, part)
        else:
            raise CliError(f"{what}: {part!r} in {key!r} is a plain field, not a sub-configuration")
    _check_known(target, name, key, what)
    return target, name


def _check_known(config: pexConfig.Config, name: str, key: str, what: str) -> None:
    if name not in config._fields:
        known = ", ".join(sorted(config._fields)) or "none"
        owner = type(config).__name__
        raise CliError(f"{what}: {owner} has no field {name!r} (in {key!r}); its fields are: {known}")


def _convert(field: pexConfig.Field, text: str) -> Any:
    import lsst.pex.config as pexConfig

    if text.lower() == "none" and field.optional:
        return None
    if hasattr(field, "parse_text"):  # a field of more than one type reads its own text
        return field.parse_text(text)
    if isinstance(field, pexConfig.ListField):
        items = [item.strip() for item in text.split(",")] if text else []
        return [_scalar(field.itemtype, item) for item in items]
    return _scalar(field.dtype, text)


def _scalar(dtype: type, text: str) -> Any:
    if dtype is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(text)
    if dtype in (int, float, str):
        return dtype(text)
    return ast.literal_eval(text)


def _describe(field: pexConfig.Field, kind: type) -> str:
    import lsst.pex.config as pexConfig

    name = {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(kind, kind.__name__)
    if isinstance(field, pexConfig.ListField):
        return f"a comma-separated list of {name} values"
    return name
