"""The ``imagemapreduce`` command line: ``run``, ``grid``, ``convert``, ``bench``, ``verify`` and ``demo``.

`main` parses the arguments, runs the subcommand and returns the exit status: 0 done, 1 the run
failed (a mapper raised on a cell), 2 bad arguments or unreadable input, 130 interrupted (Ctrl-C,
SIGINT), 143 terminated (SIGTERM). Every expected error is reported as one line,
``imagemapreduce: error: ...``, on stderr; ``--traceback`` shows the Python traceback instead.
Output into a pipe that closes early (``| head``) ends the command quietly.

Only the parser is imported up front; a command's modules (pex_config, Dask, the engine) load
once it runs, so that ``--help`` answers at once.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from ._options import CliError
from ._parser import PROG, UsageError, build_parser

__all__ = ["main", "build_parser", "CliError"]

#: Errors that mean "what you asked for cannot be done" rather than a bug: reported as one line.
#: Input files that cannot be read raise ValueError (FitsFormatError, zarr's errors) or OSError;
#: pex_config's FieldValidationError is a ValueError.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (CliError, ValueError, TypeError, LookupError, OSError, ImportError)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that a terminated run cleans up as an interrupted one."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return the exit status.

    With ``argv`` None, as when run as the ``imagemapreduce`` program, SIGTERM stops a command as
    Ctrl-C does, and an interrupted command whose cells are still running in threads (which
    Python cannot stop, and a normal exit would wait for) ends the process at once (`os._exit`)
    after its message. Worker processes are ended either way.
    """
    try:
        return _main(argv)
    except BrokenPipeError:
        return _closed_pipe()


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return _error(f"{exc} (see '{exc.prog} --help')", 2)
    except SystemExit as exc:  # --help and --version exit through argparse
        return exc.code if isinstance(exc.code, int) else 0
    from ..engine import CellFailure
    from ._commands import COMMANDS

    as_program = argv is None
    with _logging(args.verbose), _sigterm_interrupts(as_program):
        try:
            return COMMANDS[args.command](args)
        except KeyboardInterrupt as exc:
            zarr_output = getattr(args, "output", "").endswith(".zarr")
            hint = "; run again with --resume to continue" if zarr_output else ""
            what, status = ("terminated", 143) if isinstance(exc, _Terminated) else ("interrupted", 130)
            _error(f"{what}{hint}", status)
            if as_program and _threads_left():
                _exit_now(status)
            return status
        except BrokenPipeError:
            raise
        except CellFailure as exc:
            if args.traceback:
                raise
            return _error(f"{_one_line(exc)} (--mask-failures finishes the run without failed cells)", 1)
        except EXPECTED_ERRORS as exc:
            if args.traceback:
                raise
            return _error(_one_line(exc), 2)


def _closed_pipe() -> int:
    """The reader of stdout went away (``| head``): stop quietly, with the shell's status for SIGPIPE.

    stdout is pointed at /dev/null so that Python's final flush does not complain either.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real stdout (e.g. captured): nothing to flush
        pass
    return 128 + signal.SIGPIPE if hasattr(signal, "SIGPIPE") else 1


def _one_line(exc: BaseException) -> str:
    """Return the exception's message on one line.

    Left out: pex_config's pointer to the field's source, and the worker's traceback that a
    failed cell's message carries (both shown with --traceback).
    """
    text = str(exc)
    for tail in ("\nFor more information", "\nTraceback (most recent call last)"):
        text = text.split(tail)[0]
    return in_cli_words(" ".join(text.split())) or type(exc).__name__


#: The library's advice in config fields, and the same advice in the command line's options.
CLI_WORDS = {
    "set config.scaleByFwhm = False": "drop --scale-by-fwhm",
    "config.scaleByFwhm = False": "no --scale-by-fwhm",
    "config.scaleByFwhm is True": "--scale-by-fwhm is given",
    "config.maskFailures = True": "--mask-failures",
    "config.maskFailures": "--mask-failures",
    "config.cellTimeout": "--cell-timeout",
    "config.stitchRegionSize": "--region-size",
    "config.numWorkers": "--workers",
    "config.adjustGridOption": "--adjust",
    "config.progressBar": "--no-progress",
    "config.cellSizeX": "--cell-size",
    "config.cellSizeY": "--cell-size",
    "config.gridStepX": "--grid-step",
    "config.gridStepY": "--grid-step",
    "config.borderSizeX": "--border",
    "config.borderSizeY": "--border",
    "config.scheduler": "--scheduler",
    "config.numRetries": "--config numRetries",
}


def in_cli_words(message: str) -> str:
    """Reword advice given in config fields (``config.scaleByFwhm = False``) in the options that set them."""
    for field, option in CLI_WORDS.items():  # longest phrases first, as written above
        message = message.replace(field, option)
    return message


def _error(message: str, status: int) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def _threads_left() -> bool:
    """Whether threads that a normal exit would wait for are still running (e.g. abandoned cells)."""
    main_thread = threading.main_thread()
    return any(t.is_alive() and not t.daemon and t is not main_thread for t in threading.enumerate())


def _exit_now(status: int) -> NoReturn:
    """End the process without waiting for threads (abandoned cells) that would keep it alive."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    os._exit(status)


@contextmanager
def _sigterm_interrupts(enabled: bool) -> Iterator[None]:
    """While a command runs, make SIGTERM raise `_Terminated` in the main thread (as SIGINT does)."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> NoReturn:
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _logging(verbose: bool) -> Iterator[None]:
    """Show the package's warnings (and with ``verbose`` its info messages) on stderr while a command runs."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    package = logging.getLogger("imagemapreduce")  # the command's tasks log under imagemapreduce.cli
    level = package.level
    package.addHandler(handler)
    package.setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"
