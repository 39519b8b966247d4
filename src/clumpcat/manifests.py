"""Manifests: text files that list a stage's input paths, one per line.

Linux caps one command-line argument at 128 KiB, about 5,000 shard paths, so
no workflow rule puts a list of shards or tables on a command line
(DESIGN.md, "Package layout and settings"): it writes the list into a
manifest and hands the stage ``@MANIFEST`` instead. Every list option of the
CLI takes either paths or ``@MANIFEST`` (or both)::

    clumpcat catalogue --shards @results/manifests/survey-shards-0123456789ab.txt ...
    clumpcat catalogue --shards results/survey/shards/00000 results/survey/shards/00001 ...

The format, for people writing one by hand:

- one path per line, in the order the stage should read them;
- blank lines and lines starting with ``#`` are skipped;
- a relative path is relative to the folder holding the manifest (not to the
  current folder), so a results folder can be moved or archived whole.
  :func:`write_manifest` writes paths that way; absolute paths stay absolute.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from clumpcat.errors import InputError

__all__ = [
    "MANIFEST_EPILOG",
    "MANIFEST_PREFIX",
    "ManifestPaths",
    "expand_manifests",
    "manifest_digest",
    "manifest_help",
    "read_manifest",
    "write_manifest",
]

#: A list option's value that starts with this names a manifest, not a path.
MANIFEST_PREFIX = "@"
#: A parser's epilog saying that its list options take manifests.
MANIFEST_EPILOG = (
    "Every option that takes several paths also takes @MANIFEST: a file listing them, one per line."
)
#: Missing paths quoted in one error message; the rest are counted.
_MAX_QUOTED = 5


def manifest_digest(paths: Iterable[str | os.PathLike]) -> str:
    """A short SHA-256 of a list of paths, in order (the workflow names manifests by it).

    Parameters
    ----------
    paths : iterable of str or path
        The listed paths, as the workflow gives them.

    Returns
    -------
    str
        The first 12 hex digits: the same list always gives the same name, a
        changed list a new one.
    """
    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.fsencode(path))
        digest.update(b"\n")
    return digest.hexdigest()[:12]


def _manifest_text(manifest: Path, paths: Iterable[str | os.PathLike]) -> str:
    folder = os.path.abspath(manifest.parent)
    lines = []
    for path in paths:
        text = os.fspath(path)
        if "\n" in text or "\r" in text:
            raise InputError(f"{manifest}: a path holds a line break and cannot be listed: {text!r}")
        # Relative paths are stored relative to the manifest's folder (see the module doc).
        lines.append(text if os.path.isabs(text) else os.path.relpath(os.path.abspath(text), folder))
    return "".join(f"{line}\n" for line in lines)


def write_manifest(manifest: str | os.PathLike, paths: Iterable[str | os.PathLike]) -> bool:
    """Write a manifest, only if its content changes.

    Parameters
    ----------
    manifest : str or path
        The manifest file; its folder is created.
    paths : iterable of str or path
        The listed paths. Relative ones are relative to the current folder and
        are stored relative to the manifest's folder.

    Returns
    -------
    bool
        True if the file was written, False if it already held this list (its
        modification time is then left alone, so nothing downstream reruns).

    Raises
    ------
    InputError
        If a path holds a line break.
    """
    manifest = Path(manifest)
    text = _manifest_text(manifest, paths)
    try:
        if manifest.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    manifest.parent.mkdir(parents=True, exist_ok=True)
    tmp = manifest.with_name(f".{manifest.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, manifest)
    return True


def read_manifest(manifest: str | os.PathLike, *, must_exist: bool = True) -> list[str]:
    """The paths a manifest lists, relative ones resolved against its folder.

    Parameters
    ----------
    manifest : str or path
        A manifest file (see the module doc for the format).
    must_exist : bool
        Check that every listed path exists (a file or a folder).

    Returns
    -------
    list of str
        The paths in the order listed.

    Raises
    ------
    InputError
        If the manifest cannot be read, lists nothing, or (``must_exist``)
        lists paths that do not exist: the message names the manifest and the
        line numbers.
    """
    manifest = Path(manifest)
    try:
        text = manifest.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"manifest {manifest} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"manifest {manifest} cannot be read as text: {exc}") from None
    folder = manifest.parent
    paths: list[str] = []
    missing: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = entry if os.path.isabs(entry) else os.path.normpath(folder / entry)
        if must_exist and not os.path.exists(path):
            missing.append(f"line {number}: {path}")
        paths.append(path)
    if missing:
        more = f" (and {len(missing) - _MAX_QUOTED} more)" if len(missing) > _MAX_QUOTED else ""
        raise InputError(
            f"manifest {manifest} lists {len(missing)} path(s) that do not exist: "
            f"{'; '.join(missing[:_MAX_QUOTED])}{more}. Run the step that makes them, or remove their lines"
        )
    if not paths:
        raise InputError(f"manifest {manifest} lists no path")
    return paths


def expand_manifests(values: Sequence[str | os.PathLike]) -> list[str]:
    """Replace every ``@MANIFEST`` value by the paths the manifest lists.

    Parameters
    ----------
    values : sequence of str or path
        A list option's values: paths and/or ``@MANIFEST``.

    Returns
    -------
    list of str
        The paths, manifests expanded in place.

    Raises
    ------
    InputError
        As :func:`read_manifest`.
    """
    out: list[str] = []
    for value in values:
        text = os.fspath(value)
        if text.startswith(MANIFEST_PREFIX) and len(text) > 1:
            out.extend(read_manifest(text[len(MANIFEST_PREFIX) :]))
        else:
            out.append(text)
    return out


class ManifestPaths(argparse.Action):
    """argparse action of a list option: paths, or ``@MANIFEST`` for the paths a manifest lists.

    Use with ``nargs="+"`` (or ``"*"``). A manifest that is missing or lists
    missing paths ends in argparse's one-line usage error, which names the
    manifest and the lines.
    """

    def __call__(self, parser, namespace, values, option_string=None):
        values = [values] if isinstance(values, (str, os.PathLike)) else list(values or [])
        try:
            paths = expand_manifests(values)
        except InputError as exc:
            parser.error(f"{option_string or self.dest}: {exc}")
        setattr(namespace, self.dest, paths)


def manifest_help(text: str) -> str:
    """An option's help with the manifest form appended."""
    return f"{text}; or @MANIFEST, a file listing them one per line"
