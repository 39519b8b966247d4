"""Exceptions and warnings raised by clumpcat."""

from __future__ import annotations

__all__ = [
    "ClumpcatError",
    "InputError",
    "CutoutError",
    "NetworkError",
    "ClumpcatWarning",
    "one_line",
]


class ClumpcatError(Exception):
    """Base class of every error clumpcat raises on purpose."""


class InputError(ClumpcatError, ValueError):
    """A table, file or option given by the user is invalid.

    The message names the file, the rows or the option at fault.
    """


class CutoutError(ClumpcatError, ValueError):
    """A cutout file breaks the cutout contract of DESIGN.md.

    Attributes
    ----------
    path : str
        The offending file.
    reason : str
        What is wrong, short enough for a ledger entry.
    """

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class NetworkError(ClumpcatError, OSError):
    """A remote service could not be reached or kept failing."""


class ClumpcatWarning(UserWarning):
    """Warnings about data that clumpcat can still process."""


def one_line(exc: BaseException | str, limit: int = 1000) -> str:
    """An exception's message on one line, at most ``limit`` characters.

    Library errors quoted in clumpcat's messages (torch, astropy, pandas)
    often span many lines; a ledger reason or a CLI error must not.
    """
    text = str(exc)
    if isinstance(exc, BaseException) and not text:
        text = type(exc).__name__
    text = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."
