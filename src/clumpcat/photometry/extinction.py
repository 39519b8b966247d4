"""Galactic extinction at each clump: SFD E(B-V) and A_b = R_b x E(B-V).

E(B-V) comes from the Schlegel, Finkbeiner & Davis (1998) map read through
:class:`dustmaps.sfd.SFDQuery` (the two Lambert zenithal-equal-area hemisphere
files ``SFD_dust_4096_ngp.fits`` and ``SFD_dust_4096_sgp.fits`` in a folder
given by the user), or, without a map, from the galaxy table's ``ebv``
column. Where neither is available :func:`resolve_ebv_source` raises before
any work starts: extinction is never silently zero.

The band coefficients depend on the survey whose filters measured the fluxes
(:func:`extinction_coefficients`): Schlafly & Finkbeiner (2011) for SDSS
(App. E, :data:`clumpcat.constants.EXTINCTION_R`) and the synthetic survey
that imitates it; the HSC pipeline's values for HSC grizy
(:data:`clumpcat.constants.HSC_EXTINCTION_R`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from clumpcat.constants import EXTINCTION_R, SURVEY_EXTINCTION_R
from clumpcat.errors import InputError

__all__ = [
    "EBV_SOURCES",
    "SFD_FILES",
    "resolve_ebv_source",
    "check_sfd_dir",
    "sfd_ebv",
    "clump_ebv",
    "extinction_coefficients",
    "survey_for_bands",
    "extinction_mags",
    "sfd_lambert_header",
]

log = logging.getLogger(__name__)

#: Where E(B-V) may come from: the SFD map, the galaxy table, or the map when
#: a folder is given and the table otherwise.
EBV_SOURCES: tuple[str, ...] = ("auto", "sfd", "table")
#: The SFD (1998) hemisphere files dustmaps reads from the map folder.
SFD_FILES: tuple[str, str] = ("SFD_dust_4096_ngp.fits", "SFD_dust_4096_sgp.fits")


def check_sfd_dir(sfd_dir: str | Path) -> Path:
    """Check that ``sfd_dir`` holds both SFD hemisphere files.

    Raises
    ------
    InputError
        Naming the folder and each missing file.
    """
    folder = Path(sfd_dir)
    missing = [name for name in SFD_FILES if not (folder / name).is_file()]
    if missing:
        raise InputError(
            f"--sfd-dir {folder}: missing SFD map file(s) {', '.join(missing)} "
            "(get them with `python -c 'import dustmaps.sfd; dustmaps.sfd.fetch()'` "
            "or use --ebv-source table with an 'ebv' column in the galaxy table)"
        )
    return folder


def resolve_ebv_source(
    source: str,
    sfd_dir: str | Path | None,
    galaxies: pd.DataFrame | None = None,
    objids: Iterable[str] | None = None,
    table_name: str = "galaxy table",
) -> str:
    """Decide where E(B-V) comes from, and fail before any work if nowhere.

    Parameters
    ----------
    source : {'auto', 'sfd', 'table'}
        Requested source. ``'auto'`` uses the SFD map when ``sfd_dir`` is
        given, else the galaxy table.
    sfd_dir : str or Path, optional
        Folder with the two SFD hemisphere files.
    galaxies : DataFrame, optional
        Galaxy table (needs ``objid`` and, for the table source, ``ebv``).
    objids : iterable of str, optional
        Galaxies that will be measured; only their ``ebv`` must be finite.
        Default: every row.
    table_name : str
        Name of the galaxy table in messages (usually its path).

    Returns
    -------
    str
        ``'sfd'`` or ``'table'``.

    Raises
    ------
    InputError
        If the source is unknown; the SFD folder lacks a file; or the table
        source is chosen and ``ebv`` is absent or not finite for some galaxy
        (those objids are named).
    """
    if source not in EBV_SOURCES:
        raise InputError(f"--ebv-source must be one of {', '.join(EBV_SOURCES)}, got {source!r}")
    if source == "sfd" or (source == "auto" and sfd_dir is not None):
        if sfd_dir is None:
            raise InputError("--ebv-source sfd needs --sfd-dir (the folder with the SFD map files)")
        check_sfd_dir(sfd_dir)
        return "sfd"
    if galaxies is None or "ebv" not in galaxies.columns:
        raise InputError(
            f"{table_name}: no E(B-V) available: give --sfd-dir with the SFD map files "
            "or an 'ebv' column in the galaxy table (extinction is never assumed zero)"
        )
    frame = galaxies
    if objids is not None:
        wanted = {str(o) for o in objids}
        frame = galaxies[galaxies["objid"].astype(str).isin(wanted)]
    values = pd.to_numeric(frame["ebv"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        names = frame["objid"].astype(str).to_numpy()[bad]
        shown = ", ".join(names[:10]) + (f" and {bad.sum() - 10} more" if bad.sum() > 10 else "")
        raise InputError(
            f"{table_name}: column 'ebv' is missing, negative or not finite for objid {shown}; "
            "give --sfd-dir to read the SFD map instead"
        )
    return "table"


@lru_cache(maxsize=2)
def _sfd_query(folder: str):
    # dustmaps warns at import when ~/.dustmapsrc is absent; the map folder
    # is passed explicitly, so its configuration file is irrelevant here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Configuration file not found")
        from dustmaps.sfd import SFDQuery

        return SFDQuery(map_dir=folder)


def sfd_ebv(ra, dec, sfd_dir: str | Path) -> np.ndarray:
    """SFD (1998) E(B-V) at ICRS positions, bilinearly interpolated.

    Parameters
    ----------
    ra, dec : array_like or Quantity
        ICRS coordinates; plain numbers are degrees.
    sfd_dir : str or Path
        Folder with ``SFD_dust_4096_ngp.fits`` and ``SFD_dust_4096_sgp.fits``.

    Returns
    -------
    ndarray
        E(B-V) in magnitudes, float64, one per position.

    Raises
    ------
    InputError
        If a map file is missing or unreadable.
    """
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    folder = check_sfd_dir(sfd_dir)
    ra = np.atleast_1d(u.Quantity(ra, u.deg).value)
    dec = np.atleast_1d(u.Quantity(dec, u.deg).value)
    if ra.size == 0:
        return np.zeros(0)
    try:
        query = _sfd_query(str(folder.resolve()))
    except (OSError, ValueError) as exc:
        raise InputError(f"--sfd-dir {folder}: cannot read the SFD maps ({exc})") from exc
    coords = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs")
    return np.asarray(query.query(coords), dtype=float)


def clump_ebv(
    clumps: pd.DataFrame,
    galaxies: pd.DataFrame,
    source: str,
    sfd_dir: str | Path | None = None,
) -> np.ndarray:
    """E(B-V) for each clump row.

    Parameters
    ----------
    clumps : DataFrame
        With ``objid``, ``ra``, ``dec`` (deg).
    galaxies : DataFrame
        Galaxy table with ``objid`` and, for the table source, ``ebv``.
    source : {'sfd', 'table'}
        As returned by :func:`resolve_ebv_source`.
    sfd_dir : str or Path, optional
        SFD map folder, for ``source='sfd'``.

    Returns
    -------
    ndarray
        E(B-V) in mag per clump: the map at the clump position, or the host
        galaxy's table value.
    """
    if len(clumps) == 0:
        return np.zeros(0)
    if source == "sfd":
        return sfd_ebv(clumps["ra"].to_numpy(float), clumps["dec"].to_numpy(float), sfd_dir)
    if source != "table":
        raise InputError(f"E(B-V) source must be 'sfd' or 'table', got {source!r}")
    lookup = pd.Series(
        pd.to_numeric(galaxies["ebv"], errors="coerce").to_numpy(float),
        index=galaxies["objid"].astype(str),
    )
    return lookup.reindex(clumps["objid"].astype(str)).to_numpy(dtype=float)


def extinction_coefficients(survey: str) -> dict[str, float]:
    """``R_b = A_b / E(B-V)`` of the filters of ``survey``.

    Parameters
    ----------
    survey : {'sdss', 'synthetic', 'hsc'}
        The survey whose filters measured the fluxes.

    Returns
    -------
    dict of str to float

    Raises
    ------
    InputError
        If the survey is unknown (the known ones are named).

    Examples
    --------
    >>> extinction_coefficients('hsc')['y']
    1.075
    """
    try:
        return SURVEY_EXTINCTION_R[survey]
    except KeyError:
        raise InputError(
            f"survey must be one of {', '.join(SURVEY_EXTINCTION_R)} to pick the extinction "
            f"coefficients, got {survey!r}"
        ) from None


def survey_for_bands(bands: Iterable[str]) -> str:
    """The survey a band set belongs to when nobody says: ``'hsc'`` with a y band, else ``'sdss'``.

    Only y tells the two apart (SDSS has no y, HSC no u); a run on other bands
    should name its survey.
    """
    return "hsc" if "y" in tuple(bands) else "sdss"


def extinction_mags(
    ebv,
    bands: Iterable[str],
    coefficients: dict[str, float] | None = None,
    *,
    survey: str | None = None,
):
    """Extinction ``A_b = R_b x E(B-V)`` in magnitudes for each band.

    Parameters
    ----------
    ebv : float or array_like
        E(B-V) in magnitudes.
    bands : iterable of str
        Band letters.
    coefficients : dict, optional
        ``R_b`` per band; default those of ``survey``
        (:func:`extinction_coefficients`). A band without a coefficient gets
        NaN and a log warning.
    survey : str, optional
        Survey of the filters when ``coefficients`` is not given; default
        ``'sdss'`` (the Schlafly & Finkbeiner 2011 values of App. E).

    Returns
    -------
    dict of str to ndarray
        Band to ``A_b``.

    Examples
    --------
    >>> round(float(extinction_mags(0.1, ['r'])['r']), 4)
    0.2285
    >>> round(float(extinction_mags(0.1, ['y'], survey='hsc')['y']), 4)
    0.1075
    """
    if coefficients is None:
        coefficients = EXTINCTION_R if survey is None else extinction_coefficients(survey)
    ebv = np.asarray(ebv, dtype=float)
    out = {}
    for band in bands:
        if band not in coefficients:
            log.warning("no extinction coefficient R_%s; A_%s set to NaN", band, band)
            out[band] = np.full(ebv.shape, np.nan)
        else:
            out[band] = coefficients[band] * ebv
    return out


def sfd_lambert_header(size: int, pole: str):
    """FITS header of an SFD-format Lambert ZEA hemisphere map of ``size`` pixels.

    The layout follows SFD (1998, App. C): for hemisphere sign ``n`` (+1 north,
    -1 south) and 0-based pixels, ``x = s sqrt(1 - n sin b) cos l + c``,
    ``y = -n s sqrt(1 - n sin b) sin l + c`` with ``s = LAM_SCAL = size/2`` and
    ``c = size/2 - 0.5``. Useful to build small maps for tests.

    Parameters
    ----------
    size : int
        Side of the square map (4096 for the real one).
    pole : {'ngp', 'sgp'}
        Hemisphere.

    Returns
    -------
    astropy.io.fits.Header
    """
    from astropy.io import fits

    if pole not in ("ngp", "sgp"):
        raise ValueError(f"pole must be 'ngp' or 'sgp', got {pole!r}")
    nsgp = 1 if pole == "ngp" else -1
    scale = size / 2.0
    cd = np.degrees(np.sqrt(2.0)) / scale
    header = fits.Header()
    header["CTYPE1"] = "GLON-ZEA"
    header["CTYPE2"] = "GLAT-ZEA"
    header["CRPIX1"] = scale + 0.5
    header["CRPIX2"] = scale + 0.5
    header["CRVAL1"] = 0.0
    header["CRVAL2"] = 90.0 * nsgp
    header["CD1_1"] = -cd * nsgp
    header["CD1_2"] = 0.0
    header["CD2_1"] = 0.0
    header["CD2_2"] = cd * nsgp
    header["LONPOLE"] = 90.0
    header["LAM_NSGP"] = (nsgp, "+1 north, -1 south galactic hemisphere")
    header["LAM_SCAL"] = (int(scale), "Lambert projection scale in pixels")
    header["BUNIT"] = "mag"
    return header
