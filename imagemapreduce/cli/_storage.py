"""Inputs and outputs at URLs on the command line: ``s3://`` paths and ``--storage-option KEY=VALUE``.

The storage options go to every URL of the command (INPUT and OUTPUT); local paths take none.
Without them, credentials and the endpoint come from the standard environment (``AWS_*``,
``AWS_ENDPOINT_URL`` included, for S3).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..image import Exposure
from ..io.locations import StoreLocation, is_url
from ._options import CliError

__all__ = ["storage_options", "options_for", "check_url_output", "read_url_input", "is_url"]

FITS_SUFFIXES = (".fits", ".fit", ".fts")


def _value(text: str) -> Any:
    """A storage option's value: JSON where it parses (true, 3, {"a": 1}), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def storage_options(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """The ``--storage-option`` pairs as fsspec storage options; ``a.b=V`` sets ``{"a": {"b": V}}``."""
    options: dict[str, Any] = {}
    for key, text in pairs:
        *parents, leaf = key.split(".")
        target = options
        for name in parents:
            target = target.setdefault(name, {})
            if not isinstance(target, dict):
                raise CliError(f"--storage-option {key}: {name} is already set to a value, not options")
        target[leaf] = _value(text)
    return options


def options_for(where: str, options: dict[str, Any]) -> dict[str, Any] | None:
    """The storage options for ``where``: all of them for a URL, none for a local path."""
    return options if is_url(where) and not where.lower().startswith("file://") else None


def check_url_output(args: argparse.Namespace, options: dict[str, Any]) -> str:
    """Check a URL OUTPUT before any work (a *.zarr store or a *.parquet catalog); return its kind."""
    kind = "parquet" if args.output.rstrip("/").lower().endswith(".parquet") else "zarr"
    if kind == "zarr" and not args.output.rstrip("/").lower().endswith(".zarr"):
        raise CliError(
            f"an OUTPUT at a URL must be a zarr store (*.zarr) or a catalog (*.parquet), got {args.output!r}"
        )
    location = StoreLocation(args.output, options_for(args.output, options))
    if is_url(args.input) and StoreLocation(args.input, options_for(args.input, options)).identity() == (
        location.identity()
    ):
        raise CliError(f"OUTPUT {args.output!r} is the INPUT; write to a new store")
    exists = location.exists()
    if exists and not (args.overwrite or args.resume):
        raise CliError(
            f"output {args.output!r} already exists; pass --overwrite to replace it, or --resume to continue its run"
        )
    if args.resume and not exists:
        raise CliError(f"cannot --resume: {args.output!r} does not exist; run without --resume")
    return kind


def read_url_input(text: str, options: dict[str, Any], lazy: bool, hdu: int | str | None = None) -> Exposure:
    """Open a zarr store (lazily) or read a FITS file at a URL, with one-line errors."""
    from ..io.fits import FitsFormatError
    from ..io.locations import read_exposure_url

    own = options_for(text, options)
    location = StoreLocation(text, own)
    if text.rstrip("/").lower().endswith(FITS_SUFFIXES):
        if lazy:
            raise CliError(f"--lazy reads local FITS files; {text!r} is read whole (zarr is lazy on object storage)")
        try:
            return read_exposure_url(text, storage_options=own, **({} if hdu is None else {"hdu": hdu}))
        except FileNotFoundError:
            raise CliError(f"input {text!r} does not exist") from None
        except FitsFormatError as exc:
            raise CliError(str(exc)) from None
    if not location.exists():
        raise CliError(f"input {text!r} does not exist")
    return open_zarr_input(location, text, hdu)


def open_zarr_input(where: Any, text: str, hdu: Any = None) -> Exposure:
    """INPUT opened as a zarr store (a path or a `StoreLocation`), its problems as one-line CLI errors."""
    from ..io.zarr_store import open_zarr_exposure

    if hdu is not None:
        raise CliError(f"--hdu picks a FITS extension; {text!r} is a zarr store")
    try:
        return open_zarr_exposure(where)
    except (ValueError, OSError, KeyError) as exc:
        raise CliError(f"cannot read input {text!r} as a zarr exposure store: {exc}") from None
    except RuntimeError as exc:  # an unfinished run's store
        raise CliError(str(exc)) from None
