"""The truth table of injected sources, shared by ``simulate`` and ``inject``.

One row per injected source (clumps ``normal``, foreground stars ``odd``).
Background galaxies of the synthetic survey are contaminants and are *not*
in the truth table: a detector that finds one has made a false detection.
Positions are in the *cutout* frame (FITS pixels, 0-based).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clumpcat.constants import SDSS_BANDS
from clumpcat.tables import ColumnDoc

__all__ = ["TRUTH_COLUMNS", "TRUTH_DTYPES", "truth_frame", "DETECTION_SNR"]

#: A source is ``detectable`` at S/N >= 5 in the g- or r-band aperture.
DETECTION_SNR = 5.0

#: Units and descriptions of the truth table's columns.
TRUTH_COLUMNS: dict[str, ColumnDoc] = {
    "objid": ("", "Galaxy identifier"),
    "source_id": ("", "Index of the source within its galaxy (0-based)"),
    "x": ("pix", "Source centre, cutout frame, 0-based column"),
    "y": ("pix", "Source centre, cutout frame, 0-based row"),
    "ra": ("deg", "Right ascension of the source centre (ICRS)"),
    "dec": ("deg", "Declination of the source centre (ICRS)"),
    "label": ("", "Clump Scout class: normal (clump) or odd (foreground star)"),
    "kind": ("", "clump, clump_pair (member of a close pair), resolved_clump, star or injected_clump"),
    **{
        f"flux_{b}": ("nanomaggy", f"True observed (reddened) {b}-band flux of the source")
        for b in SDSS_BANDS
    },
    "flux_ratio_u": ("", "u-band source flux / host u-band flux (observed)"),
    "fwhm_r_px": ("pix", "Observed r-band FWHM of the source (PSF and intrinsic size in quadrature)"),
    "snr_g": ("", "g-band S/N in a 1.125 x FWHM radius aperture, sky + host + source noise"),
    "snr_r": ("", "r-band S/N in a 1.125 x FWHM radius aperture, sky + host + source noise"),
    "detectable": ("", "S/N >= 5 in the g- or r-band aperture: a clump a volunteer could see"),
}

#: pandas dtype of each truth column.
TRUTH_DTYPES: dict[str, str] = {
    "objid": "object",
    "source_id": "int32",
    "label": "object",
    "kind": "object",
    "detectable": "bool",
    **{c: "float64" for c in TRUTH_COLUMNS if c not in ("objid", "source_id", "label", "kind", "detectable")},
}


def truth_frame(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """A truth DataFrame with the contract's columns, order and dtypes (even when empty).

    Missing band fluxes (e.g. u for an HSC cutout) are NaN.
    """
    frame = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows.copy()
    for col, dtype in TRUTH_DTYPES.items():
        if col not in frame.columns:
            frame[col] = pd.Series(dtype=dtype) if frame.empty else (np.nan if dtype == "float64" else None)
    frame = frame[list(TRUTH_COLUMNS)]
    return frame.astype(TRUTH_DTYPES).reset_index(drop=True)
