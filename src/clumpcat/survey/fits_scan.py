"""Fast reading of plain FITS image files: one read, headers scanned card by card.

``astropy.io.fits`` turns every card of every header into an object and
consults its configuration for each: about 15 ms for a 16-HDU cutout, read
again by each stage of the pipeline, which on a CPU is as long as segmenting
the galaxy. A cutout is a plain file: floating-point images in ``IMAGE``
extensions. :func:`scan_images` reads exactly that subset and declines
everything else (returns ``None``): integer or scaled pixels, compressed or
table extensions, random groups, long-string ``CONTINUE`` cards, non-ASCII
headers, a file shorter than its headers promise or with bytes after its last
HDU. The caller then reads the file with astropy, whose conversions, checks
and error messages apply unchanged; this module never decides that a file is
broken.

The FITS layout followed here is the standard's (FITS 4.0, sections 3-4):
2880-byte blocks, 80-character cards, ``KEYWORD = value / comment``, the data
of an HDU starting at the block after its ``END`` card, big-endian.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = ["ScannedHeader", "ScannedImage", "scan_images"]

_BLOCK = 2880
_CARD = 80
_FLOAT_TYPES = {-32: ">f4", -64: ">f8"}
_INT = re.compile(r"[+-]?[0-9]+\Z")
#: Cards that carry no value of their own (FITS 4.0 section 4.4.2.4).
_COMMENTARY = {"", "COMMENT", "HISTORY"}


class _NotPlain(Exception):
    """The file is outside the subset read here; astropy must read it."""


def _value(text: str):
    """The value of a card from its text after ``= `` (FITS 4.0 section 4.2)."""
    text = text.lstrip()
    if text.startswith("'"):
        chars, i = [], 1
        while True:
            end = text.find("'", i)
            if end < 0:
                raise _NotPlain("unterminated string")
            chars.append(text[i:end])
            if text.startswith("''", end):
                chars.append("'")
                i = end + 2
            else:
                break
        # Trailing blanks of a string value are not significant (section 4.2.1.1).
        return "".join(chars).rstrip()
    text = text.split("/", 1)[0].strip()
    if not text:
        return None
    if text in ("T", "F"):
        return text == "T"
    if _INT.match(text):
        return int(text)
    try:
        return float(text.replace("D", "E").replace("d", "e"))
    except ValueError:
        raise _NotPlain(f"value {text!r}") from None


class ScannedHeader(Mapping):
    """The cards of one scanned header: keyword to value.

    Behaves like the parts of :class:`astropy.io.fits.Header` the readers use
    (``in``, ``[]``, ``get``, keywords in any case); a keyword that appears
    twice gives its first value, as astropy does. :attr:`text` keeps the
    original cards, for a WCS.
    """

    def __init__(self, values: dict[str, object], text: str):
        self._values = values
        self._text = text

    def __getitem__(self, keyword: str):
        return self._values[keyword.upper()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, keyword: object) -> bool:
        return isinstance(keyword, str) and keyword.upper() in self._values

    @property
    def text(self) -> str:
        """The header's cards as in the file, ``END`` included (what :class:`astropy.wcs.WCS` takes)."""
        return self._text


@dataclass(frozen=True)
class ScannedImage:
    """One HDU of a scanned file; its pixels are read by :meth:`data`.

    Attributes
    ----------
    name : str
        ``EXTNAME`` in upper case (empty when absent).
    header : ScannedHeader
        The HDU's cards.
    shape : tuple of int
        Array shape in numpy order (``NAXISn, ..., NAXIS1``); empty when the
        HDU has no data.
    """

    name: str
    header: ScannedHeader
    shape: tuple[int, ...]
    _dtype: str
    _offset: int
    _path: Path

    def data(self) -> np.ndarray | None:
        """The pixels, read from the file now, native-endian (``None`` for an HDU without data)."""
        if not self.shape:
            return None
        count = math.prod(self.shape)
        raw = np.fromfile(self._path, dtype=self._dtype, count=count, offset=self._offset)
        if raw.size != count:
            raise OSError(f"{self._path}: {self.name or 'HDU'} data shorter than its header says")
        return raw.astype(raw.dtype.newbyteorder("="), copy=False).reshape(self.shape)


def _header(file: BinaryIO, start: int) -> tuple[ScannedHeader, int]:
    """The header at ``start``, every value parsed, and the offset of its data."""
    values: dict[str, object] = {}
    cards: list[str] = []
    offset = start
    file.seek(start)
    while True:
        chunk = file.read(_BLOCK)
        if len(chunk) < _BLOCK:
            raise _NotPlain("header runs past the end of the file")
        try:
            block = chunk.decode("ascii")
        except UnicodeDecodeError:
            raise _NotPlain("non-ASCII header") from None
        offset += _BLOCK
        for i in range(0, _BLOCK, _CARD):
            card = block[i : i + _CARD]
            keyword = card[:8].rstrip()
            if keyword == "END":
                cards.append(card)
                return ScannedHeader(values, "".join(cards)), offset
            cards.append(card)
            if keyword == "CONTINUE":
                raise _NotPlain("long-string CONTINUE card")
            if card[8:9] == "=" and card[9:10] != " " and keyword not in _COMMENTARY:
                # Not a standard value indicator (section 4.1.2.2); astropy's leniency decides.
                raise _NotPlain(f"card {keyword!r} without '= '")
            if keyword in _COMMENTARY or keyword == "HIERARCH" or card[8:10] != "= ":
                continue
            keyword = keyword.upper()
            if keyword not in values:
                values[keyword] = _value(card[10:])


def _hdu(file: BinaryIO, file_size: int, start: int, first: bool) -> tuple[ScannedImage, int]:
    """The HDU at ``start`` of a file of ``file_size`` bytes and the offset of the next one."""
    header, data_start = _header(file, start)
    try:
        if first:
            if header.get("SIMPLE") is not True or header.get("GROUPS"):
                raise _NotPlain("not a simple primary HDU")
        elif (
            header.get("XTENSION") != "IMAGE" or header.get("PCOUNT", 0) != 0 or header.get("GCOUNT", 1) != 1
        ):
            raise _NotPlain("not an IMAGE extension")
        naxis = header["NAXIS"]
        sides = [header[f"NAXIS{k}"] for k in range(1, naxis + 1)]
        bitpix = header["BITPIX"]
    except KeyError as exc:
        raise _NotPlain(f"no {exc}") from None
    if not all(isinstance(v, int) and v >= 0 for v in (naxis, *sides)):
        raise _NotPlain("bad NAXIS")
    if naxis and math.prod(sides) and bitpix not in _FLOAT_TYPES:
        # Integer pixels go through astropy: BSCALE, BZERO and BLANK apply.
        raise _NotPlain("integer pixels")
    if header.get("BSCALE", 1) != 1 or header.get("BZERO", 0) != 0:
        raise _NotPlain("scaled pixels")
    shape = tuple(reversed(sides)) if naxis and math.prod(sides) else ()
    nbytes = math.prod(shape) * abs(bitpix) // 8 if shape else 0
    end = data_start + -(-nbytes // _BLOCK) * _BLOCK
    if end > file_size:
        raise _NotPlain("data runs past the end of the file")
    name = header.get("EXTNAME", "")
    if not isinstance(name, str):
        raise _NotPlain("EXTNAME is not a string")
    dtype = _FLOAT_TYPES.get(bitpix, ">f4")
    return ScannedImage(name.upper(), header, shape, dtype, data_start, Path(file.name)), end


def scan_images(path: str | Path) -> list[ScannedImage] | None:
    """Scan a plain FITS image file; ``None`` where astropy must read it.

    Parameters
    ----------
    path : str or Path
        The file. Only its headers are read here: the pixels of an HDU are
        read when :meth:`ScannedImage.data` is called.

    Returns
    -------
    list of ScannedImage or None
        Every HDU in file order, the primary first; ``None`` when the file is
        outside the plain subset (see the module's docstring), including a
        truncated or malformed one, which astropy then reports.

    Raises
    ------
    OSError
        When the file cannot be read at all.
    """
    hdus: list[ScannedImage] = []
    offset = 0
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        try:
            while offset < size:
                hdu, offset = _hdu(file, size, offset, first=not hdus)
                hdus.append(hdu)
        except _NotPlain:
            return None
    return hdus or None
