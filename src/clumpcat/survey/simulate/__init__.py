"""The synthetic SDSS-like survey (``clumpcat simulate``).

Modules, one job each: :mod:`.colours` (SEDs), :mod:`.hosts` (disc, bulge,
arms, bars), :mod:`.sources` (clumps, stars, background galaxies),
:mod:`.conditions` (sky noise, seeing range and PSF shape per galaxy),
:mod:`.psfs` (the PSF images, drawn to a half-maximum FWHM),
:mod:`.observe` (convolution, reddening, noise, WCS), :mod:`.truth` (truth table),
:mod:`.survey` (the driver) and :mod:`.cli`.
"""

from __future__ import annotations

from clumpcat.survey.simulate.cli import configure_parser, run
from clumpcat.survey.simulate.survey import (
    GalaxyModel,
    RenderedGalaxy,
    draw_galaxy,
    render_galaxy,
    sim_objid,
    simulate_survey,
)
from clumpcat.survey.simulate.truth import TRUTH_COLUMNS, truth_frame

__all__ = [
    "configure_parser",
    "run",
    "GalaxyModel",
    "RenderedGalaxy",
    "draw_galaxy",
    "render_galaxy",
    "sim_objid",
    "simulate_survey",
    "TRUTH_COLUMNS",
    "truth_frame",
]
