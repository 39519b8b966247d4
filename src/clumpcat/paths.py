"""File names derived from galaxy ids, safely.

An objid becomes part of a file name (``cutouts/{objid}.fits``), so it is
checked here: it may hold only ``[A-Za-z0-9_.-]`` and may not start with a
dot, which rules out ``..`` and hidden files. No objid can name a path outside
its folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from clumpcat.errors import InputError

__all__ = ["OBJID_PATTERN", "check_objid", "objid_path"]

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


def objid_path(folder: str | Path, objid: object, suffix: str) -> Path:
    """Path of the file for ``objid`` inside ``folder``, e.g. ``folder/123.fits``."""
    return Path(folder) / f"{check_objid(objid)}{suffix}"
