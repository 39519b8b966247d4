"""File names derived from galaxy ids, safely.

An objid becomes part of a file name (``cutouts/{objid}.fits``), so it is
checked here: it may hold only ``[A-Za-z0-9_.-]`` and may not start with a
dot, which rules out ``..`` and hidden files. No objid can name a path outside
its folder: :func:`objid_path` is the one place that joins a galaxy's id to a
folder, and it also checks the joined path. :func:`check_name` does the same
for a single folder or file name taken from configuration (an HSC rerun).
"""

from __future__ import annotations

import re
from pathlib import Path

from clumpcat.errors import InputError

__all__ = ["OBJID_PATTERN", "check_objid", "check_name", "objid_path"]

#: What an objid may look like (DESIGN.md, galaxy table contract).
OBJID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")


def check_objid(objid: object) -> str:
    """Return ``objid`` as a string, or raise if it cannot name a file.

    Raises
    ------
    InputError
        If the id is empty, longer than 128 characters, starts with a dot or
        holds a character outside ``[A-Za-z0-9_.-]``.
    """
    text = str(objid)
    if not OBJID_PATTERN.fullmatch(text):
        raise InputError(
            f"objid {text!r} is not allowed: use 1-128 characters of [A-Za-z0-9_.-], not starting with '.'"
        )
    return text


def check_name(value: object, what: str) -> str:
    """Return ``value`` as a string if it is one plain file or folder name.

    Parameters
    ----------
    value : object
        A name from configuration or a table that becomes part of a path.
    what : str
        The option or column it came from, for the message.

    Raises
    ------
    InputError
        If the name is empty, starts with a dot, or holds a character outside
        ``[A-Za-z0-9_.-]`` (so no ``/``, ``..`` or NUL).
    """
    text = str(value)
    if not OBJID_PATTERN.fullmatch(text):
        raise InputError(
            f"{what} {text[:40]!r} cannot name a folder: use 1-128 characters of [A-Za-z0-9_.-], "
            "not starting with '.'"
        )
    return text


def objid_path(folder: str | Path, objid: object, suffix: str) -> Path:
    """Path of the file for ``objid`` inside ``folder``, e.g. ``folder/123.fits``.

    Parameters
    ----------
    folder : str or Path
        The folder the file must lie in.
    objid : object
        The galaxy id (checked with :func:`check_objid`).
    suffix : str
        Appended to the id, e.g. ``.fits`` or ``-r.psf.fits``; no separators.

    Raises
    ------
    InputError
        If the id or the suffix could name a file outside ``folder``.
    """
    name = f"{check_objid(objid)}{suffix}"
    if "/" in suffix or "\\" in suffix or "\0" in suffix:
        raise InputError(f"file suffix {suffix!r} for objid {objid} holds a path separator")
    path = Path(folder) / name
    # The checks above already forbid it; this keeps it true if they change.
    if path.parent != Path(folder) or name in (".", ".."):
        raise InputError(f"objid {objid!r} would name a file outside {folder}")
    return path
