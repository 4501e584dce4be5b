"""The command line's error boundary: one line ``error: <where>: <problem>`` and one exit-code table.

Every verb of ``python -m study`` and ``python -m analysis`` runs inside ``boundary``: an
expected failure (bad input, a damaged store, an unreachable storage, an OS, network,
Arrow, YAML or decoding error) prints one line of at most ``LINE_LIMIT`` characters to
stderr and returns its exit code from ``EXIT_CODES``; a traceback is printed only with
``--debug``. An exception nobody expected is a bug: it exits ``EXIT_BUG`` with a line
that says so. docs/cli.md shows the same table.
"""

from __future__ import annotations

import reprlib
import sys
import traceback
from typing import Any, Callable

import yaml

EXIT_OK = 0
EXIT_STORE = 1
EXIT_USAGE = 2
EXIT_VERDICT_FAILED = 3
EXIT_STORAGE = 4
EXIT_BUG = 70
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_STORE: "the study does not exist, or a file of it is missing, corrupt or foreign; nothing was written",
    EXIT_USAGE: "bad input: the command line, the spec, a study name, a name already taken or a study "
                "running elsewhere; nothing was written",
    EXIT_VERDICT_FAILED: "`analysis report --strict`: a verdict failed (the report is written)",
    EXIT_STORAGE: "the storage cannot be reached, read or written (no such host, no network, a file where "
                  "a folder should be, no permission, an unsupported URI)",
    EXIT_BUG: "an unexpected error: a bug; rerun with --debug and report the traceback",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C, or SIGTERM as `ray job stop` sends); what ran is saved: "
                      "`python -m study resume NAME` finishes it",
}

LINE_LIMIT = 400  # a path (the where) and ~300 characters of problem, long values already abbreviated


class UsageError(ValueError):
    """A command-line value that cannot be used (a study name, an option); one line, exit 2."""


class StorageError(RuntimeError):
    """The storage root cannot be reached or written; one line, exit 4."""


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr`` of a value a user gave, bounded in size and time whatever its shape (a YAML
    alias bomb, a recursive list, a 5,000-digit integer)."""
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 3, 6, 6, 6, 6
    r.maxstring = r.maxother = r.maxlong = limit
    try:
        text = r.repr(value)
    except (ValueError, RecursionError):  # e.g. an int beyond Python's digit limit for str()
        text = f"<{type(value).__name__}>"
    return abbreviate(text, limit)


def key_label(key: Any, limit: int = 40) -> str:
    """A mapping key the user gave, as a path element of an error message: as written when it is
    a printable string, its middle cut when long; anything else (a newline in it, not a string)
    as its bounded repr, so that the message stays one readable line."""
    if isinstance(key, str) and key.isprintable():
        return key if len(key) <= limit else key[:30] + "..." + key[-7:]
    return short_repr(key, limit)


def abbreviate(text: str, limit: int = LINE_LIMIT) -> str:
    """``text`` on one line, its middle cut out when longer than ``limit`` characters."""
    text = " ".join(str(text).split("\n"))
    if not text.isprintable():  # a control character from a damaged file must not reach the terminal
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if len(text) <= limit:
        return text
    note = f" ...[{len(text) - limit + 20} characters cut]... "
    keep = max(limit - len(note), 10)
    return text[: keep * 2 // 3] + note + text[len(text) - (keep - keep * 2 // 3):]


# ---------------------------------------------------------------- what each failure means


def _data_errors() -> tuple[type, ...]:
    """Exceptions that mean "this data does not parse": stored files, never our code's logic."""
    import pyarrow as pa

    return (pa.ArrowException, UnicodeError, yaml.YAMLError, OverflowError)


def classify(exc: BaseException, where: str) -> tuple[int, str] | None:
    """(exit code, ``where: problem``) of an expected failure; None for a bug.

    ``where`` names what the verb was working on (a study folder, the storage root); it
    is used when the exception does not say where it happened.
    """
    from study.launch import LaunchError
    from study.spec import SpecError
    from study.store import StoreError

    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, f"{where}: interrupted"
    if isinstance(exc, (SpecError, LaunchError, UsageError)):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, StoreError):
        return EXIT_STORE, str(exc)
    if isinstance(exc, StorageError):
        return EXIT_STORAGE, str(exc)
    if isinstance(exc, OSError):  # ArrowIOError and socket errors are OSErrors too
        filename = getattr(exc, "filename", None)
        problem = exc.strerror if filename and exc.strerror else _first_line(exc)
        return EXIT_STORAGE, f"{filename or where}: {problem}"
    if isinstance(exc, _data_errors()):
        return EXIT_STORE, f"{where}: unreadable data ({type(exc).__name__}: {_first_line(exc)})"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def boundary(verb: Callable[[], int], *, where: Callable[[], str] | str, debug: bool = False,
             stderr=None) -> int:
    """Run one verb; turn what it raises into one ``error:`` line and an exit code."""
    stderr = stderr or sys.stderr
    try:
        return verb()
    except (Exception, KeyboardInterrupt) as exc:
        place = where() if callable(where) else where
        known = classify(exc, place)
        if debug:
            traceback.print_exc(file=stderr)
        if known is None:
            code, message = EXIT_BUG, (f"{place}: unexpected {type(exc).__name__}: {_first_line(exc)} "
                                       f"(a bug: rerun with --debug for the traceback and report it)")
        else:
            code, message = known
        print("error: " + abbreviate(message, LINE_LIMIT - len("error: ")), file=stderr)
        return code


def exit_code_table() -> str:
    """The exit codes as a Markdown table (docs/cli.md holds its text; a test compares them)."""
    rows = ["| code | meaning |", "|---|---|"]
    rows += [f"| {code} | {meaning} |" for code, meaning in EXIT_CODES.items()]
    return "\n".join(rows)


def reading(where: str):
    """A context in which data that does not parse (a damaged store file: Arrow, decoding,
    YAML, or the KeyError/TypeError/ValueError pandas raises on a forged table) becomes a
    ``StoreError`` naming ``where``: exit 1, not a traceback."""
    import contextlib

    from study.store import StoreError

    @contextlib.contextmanager
    def context():
        try:
            yield
        except (StoreError, StorageError, UsageError):
            raise
        except OSError as exc:
            if exc.errno is not None:  # the system's own error (permission, no space, connection): exit 4
                raise
            # Arrow reports a corrupt page or footer as an OSError without an errno
            raise StoreError(f"{where}: unreadable ({_first_line(exc)})") from exc
        except (*_data_errors(), ValueError, KeyError, TypeError, IndexError, RecursionError) as exc:
            raise StoreError(f"{where}: unreadable ({type(exc).__name__}: {_first_line(exc)})") from exc

    return context()
