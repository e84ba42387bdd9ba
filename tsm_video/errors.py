"""The project's error base: every bad-input error a user can cause derives from :class:`TSMVideoError`.

Each package keeps its own error type next to the code that raises it (``ConfigError``,
``CheckpointError``, ``AdapterError``, ``PromptError``, ``SettingsError``, ``ManifestError``,
``VideoReadError``, the ``eval_crafter`` and ``data_tools`` errors, ...), each also deriving from
the builtin it always was (``ValueError``, ``RuntimeError``, ``FileNotFoundError``), so existing
``except`` clauses keep working. ``tsm-video`` prints any of them as one line,
``tsm-video <command>: error: <message>``, and exits with 2 (``--debug`` shows the traceback).
Anything else is a bug and keeps its traceback.

This module imports nothing, so every layer (``tsm``, ``data``, ``eval_crafter``, ...) may use it.
"""

from __future__ import annotations

__all__ = ["TSMVideoError", "user_message"]


class TSMVideoError(Exception):
    """A problem with the user's input (a file, a flag, a config value): the message says which
    input and what is valid, in one line where possible."""


def user_message(err: BaseException) -> str | None:
    """The one-line message ``tsm-video`` shows for ``err``, or ``None`` when ``err`` is a bug.

    Project errors show their own message; an ``OSError`` about a named path (a missing file, a
    parent that is a file, a read-only folder, a full disk) shows the OS's reason and the path.
    """
    if isinstance(err, TSMVideoError):
        return str(err)
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        target = f" -> {err.filename2}" if err.filename2 is not None else ""
        return f"{err.strerror}: {err.filename}{target}"
    return None
