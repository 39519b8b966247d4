"""Clump centres refined by a PSF fit before the apertures are placed.

The detector's box centres are good to a fraction of a FWHM, not to the
tenth of a pixel that aperture photometry of a point source wants: a box
regressed on the 400-px rendered image and mapped back to the cutout, and
after the merge (Section 4.3) the centroid of several candidates. An
aperture off by ``d`` loses light as ``d^2`` and, in the joint fit
(``background='joint'``), leaves a dipole the host surface half takes up;
both read a point source low by a few percent at ``d ~ 0.3 FWHM``.

:func:`refine_centres` fits, in one band (the reference band of the forced
photometry, r where present), the clump's PSF, its two derivatives and a
quadratic host surface to the pixels within ``fit_radius_fwhm`` of the
current centre, other clumps near it fitted with their own PSFs at their
centres; the derivatives' amplitudes divided by the flux give the shift
(Gauss-Newton, clipped to half a pixel per step; a step is taken while the
PSF and its derivatives together are ``min_snr`` significant, since from a
centre well off the source the PSF column alone sees little of its light). A
clump whose PSF amplitude at the final centre is not ``min_snr`` times its
error, or whose centre would move by more than ``max_shift_fwhm`` (one FWHM,
the merge radius of Section 4.3: further away lies another candidate), keeps
the detector's centre: there the fit follows noise or host structure, not
the clump. The same centre is then used in every band
(forced photometry), so that colours are measured through one aperture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clumpcat.photometry.aperture_correction import BandPsf, psf_light, shifted_psf, stamp_gradient

__all__ = ["CentreFit", "refine_centres"]

#: Gauss-Newton passes at most; each moves the centre by <= 0.5 px.
_ITERATIONS = 6
#: Converged when a step is below this many pixels.
_TOLERANCE_PX = 0.01
#: Largest step of one pass (px): the linearised PSF holds to ~half a pixel.
_MAX_STEP_PX = 0.5
#: Other clumps within this many FWHM of the fit region get their own PSF column.
_NEIGHBOUR_FWHM = 1.5


@dataclass(frozen=True)
class CentreFit:
    """Refined centres (cutout frame, 0-based) and which clumps moved.

    Attributes
    ----------
    x, y : ndarray
        The centres to measure at: refined where ``refined``, else the input.
    refined : ndarray of bool
        The fit converged with enough S/N within ``max_shift_fwhm``.
    snr : ndarray
        S/N of the fitted PSF amplitude in the reference band (NaN where the
        fit could not be made).
    """

    x: np.ndarray
    y: np.ndarray
    refined: np.ndarray
    snr: np.ndarray


def _fit_once(
    data: np.ndarray,
    good: np.ndarray,
    sigma: np.ndarray | None,
    psf: BandPsf,
    centre: tuple[float, float],
    others: np.ndarray,
    radius: float,
    fwhm_px: float,
) -> tuple[float, float, float, float, float] | None:
    """One linearised fit at ``centre``: (flux, flux error, significance, dx, dy), or None where it cannot be made."""
    cx, cy = centre
    ny, nx = data.shape
    x0, x1 = max(int(np.floor(cx - radius)), 0), min(int(np.ceil(cx + radius)) + 1, nx)
    y0, y1 = max(int(np.floor(cy - radius)), 0), min(int(np.ceil(cy + radius)) + 1, ny)
    if x1 <= x0 or y1 <= y0:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1]
    inside = ((xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2) & good[y0:y1, x0:x1]
    xx, yy = xx[inside], yy[inside]
    if xx.size < 20:
        return None
    ix, iy = int(np.rint(cx)), int(np.rint(cy))
    stamp = shifted_psf(psf, cx - ix, cy - iy)
    gx, gy = stamp_gradient(stamp)
    dx, dy = (xx - cx) / fwhm_px, (yy - cy) / fwhm_px
    columns = [
        psf_light(stamp, ix, iy, xx, yy),
        psf_light(gx, ix, iy, xx, yy),
        psf_light(gy, ix, iy, xx, yy),
        np.ones(xx.size),
        dx,
        dy,
        dx * dx,
        dx * dy,
        dy * dy,
    ]
    for ox, oy in others:
        jx, jy = int(np.rint(ox)), int(np.rint(oy))
        columns.append(psf_light(shifted_psf(psf, ox - jx, oy - jy), jx, jy, xx, yy))
    design = np.column_stack(columns)
    values = data[yy, xx]
    try:
        normal_inv = np.linalg.inv(design.T @ design)
    except np.linalg.LinAlgError:
        return None
    coef = normal_inv @ (design.T @ values)
    resid = values - design @ coef
    if sigma is not None:
        var_pix = float(np.mean(sigma[yy, xx] ** 2))
    else:
        dof = max(xx.size - design.shape[1], 1)
        var_pix = float(resid @ resid) / dof
    flux = float(coef[0])
    flux_err = float(np.sqrt(max(var_pix * normal_inv[0, 0], 0.0)))
    # Significance of the source with its shift (the PSF and its two
    # derivatives together): far from the centre the PSF column alone
    # sees little of the light, the derivatives the rest.
    c3 = coef[:3]
    try:
        chi2 = float(c3 @ np.linalg.solve(normal_inv[:3, :3], c3)) / var_pix if var_pix > 0 else 0.0
    except np.linalg.LinAlgError:
        chi2 = 0.0
    if not flux > 0:
        return flux, flux_err, float(np.sqrt(max(chi2, 0.0))), 0.0, 0.0
    # f P(x - c - d) ~ f P - f d . grad P: the gradient columns hold -f d.
    return flux, flux_err, float(np.sqrt(max(chi2, 0.0))), -float(coef[1]) / flux, -float(coef[2]) / flux


def refine_centres(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    psf: BandPsf,
    fwhm_px: float,
    *,
    bad: np.ndarray | None = None,
    sigma: np.ndarray | None = None,
    fit_radius_fwhm: float = 1.5,
    max_shift_fwhm: float = 1.0,
    min_snr: float = 5.0,
) -> CentreFit:
    """Refine clump centres by fitting the PSF in one band.

    Parameters
    ----------
    image : ndarray
        The reference band's image (nanomaggies), cutout frame.
    x, y : array_like
        Starting centres (the detector's), cutout frame, 0-based.
    psf : BandPsf
        The band's PSF (the cutout's image, or the analytic fallback).
    fwhm_px : float
        The band's PSF FWHM in pixels.
    bad : ndarray of bool, optional
        Pixels to leave out (NaN, ``ivar <= 0``).
    sigma : ndarray, optional
        Per-pixel noise (from IVAR); without it the fit's residual scatter.
    fit_radius_fwhm : float
        Radius of the fitted region, in FWHM.
    max_shift_fwhm : float
        Largest accepted move from the starting centre, in FWHM.
    min_snr : float
        Smallest S/N of the fitted PSF amplitude for a move to be accepted.

    Returns
    -------
    CentreFit
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.size
    data = np.asarray(image, dtype=np.float64)
    good = np.isfinite(data) if bad is None else (~np.asarray(bad, dtype=bool) & np.isfinite(data))
    data = np.where(good, data, 0.0)
    out_x, out_y = x.copy(), y.copy()
    refined = np.zeros(n, dtype=bool)
    snr = np.full(n, np.nan)
    radius = fit_radius_fwhm * fwhm_px
    reach = radius + _NEIGHBOUR_FWHM * fwhm_px
    for i in range(n):
        if not (np.isfinite(x[i]) and np.isfinite(y[i])):
            continue
        near = np.hypot(x - x[i], y - y[i]) <= reach
        near[i] = False
        others = np.column_stack([x[near], y[near]])
        others = others[np.isfinite(others).all(axis=1)]
        cx, cy = x[i], y[i]
        moved = True
        for _ in range(_ITERATIONS):
            fit = _fit_once(data, good, sigma, psf, (cx, cy), others, radius, fwhm_px)
            if fit is None or not (fit[0] > 0 and fit[2] > min_snr):
                moved = False
                break
            step = np.clip([fit[3], fit[4]], -_MAX_STEP_PX, _MAX_STEP_PX)
            cx, cy = cx + float(step[0]), cy + float(step[1])
            if np.hypot(cx - x[i], cy - y[i]) > max_shift_fwhm * fwhm_px:
                moved = False
                break
            if np.hypot(*step) < _TOLERANCE_PX:
                break
        # Accepted where the PSF at the final centre is itself significant.
        final = _fit_once(data, good, sigma, psf, (cx, cy), others, radius, fwhm_px) if moved else None
        if final is not None and final[1] > 0:
            snr[i] = final[0] / final[1]
            if snr[i] > min_snr:
                out_x[i], out_y[i] = cx, cy
                refined[i] = True
    return CentreFit(out_x, out_y, refined, snr)
