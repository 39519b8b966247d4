"""Band definitions and the paper's constants, in one place.

Every number taken from the paper (Popp et al., "Transfer learning for galaxy
feature detection", the seed text) cites its section. Other modules import
these names instead of repeating the numbers.
"""

from __future__ import annotations

__all__ = [
    "SDSS_BANDS",
    "HSC_BANDS",
    "SURVEY_BANDS",
    "RGB_BANDS",
    "SDSS_PIXEL_SCALE",
    "SDSS_SKY_SIGMA_R",
    "HSC_PIXEL_SCALE",
    "NANOMAGGY_ZEROPOINT",
    "NANOMAGGY_JY",
    "HSC_ZEROPOINT",
    "HSC_MASK_PLANES",
    "CUTOUT_WIDTH_PETRO_R90",
    "RENDER_SIZE",
    "CROP_SIZE",
    "LUPTON_Q",
    "LUPTON_STRETCH",
    "LUPTON_MINIMUM",
    "LUPTON_SCALES",
    "LABEL_BOX_FWHM",
    "LABELS",
    "LABEL_IDS",
    "NMS_IOU",
    "SCORE_THRESHOLD",
    "MERGE_FWHM",
    "MATCH_FWHM",
    "HOST_MASK_NSIGMA",
    "HOST_MASK_NPIXELS",
    "APERTURE_RADIUS_FWHM",
    "ANNULUS_FWHM",
    "EXTINCTION_R",
    "HSC_EXTINCTION_R",
    "SURVEY_EXTINCTION_R",
    "FLUX_RATIO_BAND",
    "GSFC_FLUX_RATIO_THRESHOLDS",
]

#: SDSS filters in wavelength order.
SDSS_BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z")
#: HSC-SSP broad-band filters in wavelength order.
HSC_BANDS: tuple[str, ...] = ("g", "r", "i", "z", "y")
#: Bands per survey; the synthetic survey imitates SDSS.
SURVEY_BANDS: dict[str, tuple[str, ...]] = {
    "sdss": SDSS_BANDS,
    "synthetic": SDSS_BANDS,
    "hsc": HSC_BANDS,
}
#: Bands mapped to the red, green and blue channels (App. A.1 and A.2).
RGB_BANDS: tuple[str, str, str] = ("i", "r", "g")

#: Native SDSS pixel scale in arcsec per pixel (App. A.1).
SDSS_PIXEL_SCALE = 0.396
#: r-band sky noise per pixel of an SDSS frame, nanomaggies (measured on a real
#: frame; issue 10): the simulator's nominal sky noise is 0.0332 (observe.sky_sigma).
SDSS_SKY_SIGMA_R = 0.034
#: HSC-SSP coadd pixel scale in arcsec per pixel.
HSC_PIXEL_SCALE = 0.168

#: AB zero point of a flux in nanomaggies: m = 22.5 - 2.5 log10(f).
NANOMAGGY_ZEROPOINT = 22.5
#: One nanomaggy in Jansky (App. E): 3631 Jy x 10^-9.
NANOMAGGY_JY = 3.631e-6
#: AB zero point of HSC-SSP coadd counts (App. A.2 data; HSC PDR3 docs).
HSC_ZEROPOINT = 27.0
#: HSC coadd mask planes (``MP_<NAME>`` bits of a DAS cutout's MASK) whose
#: pixels are not data: bad columns, saturation, cosmic rays, pixels near a
#: CCD edge, no input image, suspect (non-linear) pixels.
HSC_MASK_PLANES: tuple[str, ...] = ("BAD", "SAT", "CR", "EDGE", "NO_DATA", "SUSPECT")

#: Cutout width in units of the r-band Petrosian R90 (App. A.1).
CUTOUT_WIDTH_PETRO_R90 = 6.0
#: Side of the rendered RGB image in pixels (App. A.1, A.2).
RENDER_SIZE = 400
#: Side of the central training crop: half the rendered side (Section 4.2).
CROP_SIZE = RENDER_SIZE // 2

#: Lupton et al. (2004) softening parameter (App. A.1, Table 6).
LUPTON_Q = 7.0
#: Lupton linear stretch (App. A.1, Table 6).
LUPTON_STRETCH = 0.2
#: Lupton minimum (App. A.1, Table 6).
LUPTON_MINIMUM = 0.0
#: Per-band scales applied before the Lupton stretch (App. A.1, Table 6).
LUPTON_SCALES: dict[str, float] = {"i": 0.7, "r": 1.17, "g": 1.818}

#: Clump Scout label boxes are squares of side 2.5 x PSF FWHM (DESIGN.md).
LABEL_BOX_FWHM = 2.5
#: Detection classes; index 0 is background in torchvision's convention.
LABELS: tuple[str, ...] = ("normal", "odd")
#: Class ids used by the detector and by Clump Scout label tables (1, 2).
LABEL_IDS: dict[str, int] = {"normal": 1, "odd": 2}

#: IoU threshold of the non-maximum suppression (Section 4.3.1).
NMS_IOU = 0.2
#: Default detection score threshold of the released code (DESIGN.md).
SCORE_THRESHOLD = 0.3
#: Candidates closer than this many r-band FWHM are merged (Section 4.3.2).
MERGE_FWHM = 1.0
#: A detection matches a truth clump within this many FWHM (Section 4.4.2).
MATCH_FWHM = 0.75
#: The paper's host segmentation threshold in units of the background RMS
#: (Section 4.3.2); the pipeline's default is ``postprocess.host_nsigma``
#: (settings.py, 0.25: measured to keep the faint outer discs).
HOST_MASK_NSIGMA = 0.5
#: Minimum connected pixels of the host segment (released code, DESIGN.md).
HOST_MASK_NPIXELS = 10

#: Photometric aperture radius in units of the band FWHM (App. E, code).
APERTURE_RADIUS_FWHM = 1.125
#: Inner and outer background annulus radii in units of FWHM (App. E, code).
ANNULUS_FWHM: tuple[float, float] = (1.5, 2.5)
#: Schlafly & Finkbeiner (2011) R_b = A_b / E(B-V) for SDSS (App. E).
EXTINCTION_R: dict[str, float] = {
    "u": 4.239,
    "g": 3.303,
    "r": 2.285,
    "i": 1.698,
    "z": 1.263,
}
#: R_b = A_b / E(B-V)_SFD for the HSC-SSP filters: the HSC pipeline's values
#: (M. Tanaka, NAOJ; lsst/obs_subaru ``config/extinctionCoeffs.py``, the same
#: numbers in lsst/faro's ``extinctionCoeffs_HSC``), for E(B-V) from the SFD
#: map as the HSC-SSP releases give it (Aihara et al. 2018, PASJ 70, S8).
#: Schlafly & Finkbeiner (2011) Table 6 itself has no HSC column.
HSC_EXTINCTION_R: dict[str, float] = {
    "g": 3.240,
    "r": 2.276,
    "i": 1.633,
    "z": 1.263,
    "y": 1.075,
}
#: R_b per survey (the synthetic survey imitates SDSS).
SURVEY_EXTINCTION_R: dict[str, dict[str, float]] = {
    "sdss": EXTINCTION_R,
    "synthetic": EXTINCTION_R,
    "hsc": HSC_EXTINCTION_R,
}
#: Band of the clump/host flux ratio per survey: the paper's u (Section 4.4.3)
#: where the survey has it; HSC has no u, so its nearest band, g.
FLUX_RATIO_BAND: dict[str, str] = {"sdss": "u", "synthetic": "u", "hsc": "g"}
#: u-band clump/host flux ratios flagged in the catalogue (Section 4.4.3).
GSFC_FLUX_RATIO_THRESHOLDS: dict[str, float] = {"3pct": 0.03, "8pct": 0.08}
