"""Which galaxies of a shard get an RGB PNG.

Detection renders from the cutouts itself, so PNGs are written only where
someone looks at them: training crops (every galaxy of the training sample),
the evaluation gallery, and volunteers' eyes (a user asks for all). The
gallery shows the first :data:`GALLERY_SIZE` galaxies of the survey sample
that have a PNG (those with truth first), so the workflow renders exactly
those: the first ``GALLERY_SIZE`` rows of the sample, which shards hold in
order (shard ``k`` holds rows ``k * shard_size`` onwards).

This module is light (no imaging imports): the workflow's ``common.smk``
reads it at parse time.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["GALLERY_SIZE", "PNG_HELP", "parse_png", "png_objids", "gallery_pngs_in_shard"]

#: Galaxies in the evaluation gallery (``clumpcat plots --gallery-size``), and
#: the survey galaxies the workflow renders to PNG by default.
GALLERY_SIZE: int = 12

PNG_HELP = (
    "which galaxies get {objid}.png: all, none, or first:N (the first N rows of the shard's "
    "galaxy table); the others are still validated and keep their render.parquet row with no png"
)


def parse_png(value: str) -> int | None:
    """Parse a ``--png`` value: ``all`` -> None (no limit), ``none`` -> 0, ``first:N`` -> N.

    Raises
    ------
    argparse.ArgumentTypeError
        If the value is none of these (the message names the allowed forms).
    """
    text = str(value).strip().lower()
    if text == "all":
        return None
    if text == "none":
        return 0
    head, sep, count = text.partition(":")
    if head == "first" and sep and count.isdigit():
        return int(count)
    raise argparse.ArgumentTypeError(f"--png must be all, none or first:N (N >= 0), got {value!r}")


def png_objids(objids: Sequence[str], first: int | None) -> set[str]:
    """The galaxies of a shard that get a PNG.

    Parameters
    ----------
    objids : sequence of str
        The shard's galaxies in the order of its galaxy table (before any
        upstream failure is dropped, so the choice does not depend on them).
    first : int or None
        From :func:`parse_png`: None for every galaxy, else the first ``first``.
    """
    chosen = objids if first is None else objids[: max(first, 0)]
    return {str(o) for o in chosen}


def gallery_pngs_in_shard(shard: int, shard_size: int, n: int = GALLERY_SIZE) -> int:
    """How many leading galaxies of shard ``shard`` are among the sample's first ``n``.

    Shard ``k`` of a sample holds its rows ``k * shard_size`` to
    ``(k + 1) * shard_size - 1``.
    """
    if shard < 0 or shard_size < 1:
        raise ValueError(f"need shard >= 0 and shard_size >= 1, got {shard}, {shard_size}")
    return max(0, min(shard_size, n - shard * shard_size))
