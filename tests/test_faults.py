"""Broken cutouts: each ends ``failed`` in the status tables with stage and reason; the others complete.

One shard holds two good galaxies and one cutout of every broken kind of
:mod:`tests.faults` (truncated, empty, int16, infinities, NaN or negative
PSF_FWHM, 3x3, 5000x5000, no WCS, a band missing, an all-NaN band). It goes
through ``clumpcat segment``, ``render``, ``postprocess`` and ``photometry``
(detections are written by hand where ``detect`` would run): no galaxy is
lost, every broken one is ``failed`` with the stage that met it and why.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd
import pytest

from clumpcat.cli import main
from clumpcat.errors import CutoutError
from clumpcat.survey.cutouts import MAX_SIDE_PX, read_cutout, write_cutout
from clumpcat.tables import read_table
from tests.conftest import synthetic_cutout
from tests.faults import BREAKERS, EXPECTED, true_detections, write_broken, write_huge


@pytest.mark.parametrize("kind", list(BREAKERS))
def test_broken_cutout_is_refused_with_its_reason(tmp_path, kind):
    path = write_broken(tmp_path, kind, synthetic_cutout(kind, shape=(48, 48)))
    with pytest.raises(CutoutError) as info:
        read_cutout(path, ("g", "r", "i"))
    assert EXPECTED[kind] in info.value.reason and str(path) == info.value.path
    assert "\n" not in info.value.reason


def test_huge_cutout_is_refused_from_its_header_without_reading_pixels(tmp_path):
    path = write_huge(tmp_path / "big.fits", synthetic_cutout("big", shape=(48, 48)), side=MAX_SIDE_PX + 1)
    tracemalloc.start()
    try:
        with pytest.raises(CutoutError, match=f"{MAX_SIDE_PX + 1}x{MAX_SIDE_PX + 1} px, over"):
            read_cutout(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5e6  # a band of it would be 67 MB


def test_scaled_integer_cutout_is_data_not_a_fault(tmp_path):
    """Integers with BSCALE are floats to the reader (a valid FITS convention)."""
    from astropy.io import fits

    cut = synthetic_cutout("s", shape=(32, 32))
    path = write_cutout(tmp_path / "s.fits", cut)
    with fits.open(path) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    hdul["R"].scale("int16", bscale=1e-3)
    hdul.writeto(path, overwrite=True)
    back = read_cutout(path)
    np.testing.assert_allclose(back.images["r"], cut.images["r"], atol=1e-3)


def test_shard_with_every_broken_kind_loses_no_galaxy(tmp_path):
    cutouts = tmp_path / "cutouts"
    good = ["good0", "good1"]
    for i, objid in enumerate(good):
        write_cutout(cutouts / f"{objid}.fits", synthetic_cutout(objid, seed=i))
    for i, kind in enumerate(BREAKERS):
        write_broken(cutouts, kind, synthetic_cutout(kind, seed=10 + i))
    objids = good[:1] + list(BREAKERS) + good[1:]
    n = len(objids)
    galaxies = tmp_path / "galaxies.parquet"
    frame = pd.DataFrame({"objid": objids, "ra": [150.0] * n, "dec": [2.0] * n})
    frame.assign(petro_r90_r=4.2, redshift=0.05, ebv=0.02).to_parquet(galaxies)
    shard = tmp_path / "shard"
    g, c = ["--galaxies", str(galaxies)], ["--cutouts", str(cutouts)]

    assert main(["segment", *g, *c, "--out", str(shard / "segments.npz")]) == 0
    argv = ["render", *g, *c, "--rgb-dir", str(tmp_path / "rgb"), "--survey", "sdss"]
    assert (
        main([*argv, "--status-out", str(shard / "status-render.parquet"), "--out", str(shard / "r.parquet")])
        == 0
    )
    # Where detect would run: the good galaxies get detections, the status is carried over.
    render_status = read_table(shard / "status-render.parquet")
    render_status.to_parquet(shard / "status-detect.parquet")
    true_detections(good).to_parquet(shard / "detections.parquet")
    argv = ["postprocess", *g, *c, "--detections", str(shard / "detections.parquet")]
    argv += ["--segments", str(shard / "segments.npz"), "--status-in", str(shard / "status-detect.parquet")]
    assert (
        main(
            [*argv, "--status-out", str(shard / "status-pp.parquet"), "--out", str(shard / "clumps.parquet")]
        )
        == 0
    )
    argv = [
        "photometry",
        *g,
        *c,
        "--clumps",
        str(shard / "clumps.parquet"),
        "--bands",
        "u",
        "g",
        "r",
        "i",
        "z",
    ]
    argv += ["--segments", str(shard / "segments.npz"), "--status-in", str(shard / "status-pp.parquet")]
    argv += ["--ebv-source", "table"]
    assert (
        main([*argv, "--status-out", str(shard / "status.parquet"), "--out", str(shard / "phot.parquet")])
        == 0
    )

    status = read_table(shard / "status.parquet").set_index("objid")
    assert list(status.index) == objids  # nobody lost, in order
    for kind in BREAKERS:
        row = status.loc[kind]
        assert (row["status"], row["stage"]) == ("failed", "render"), (kind, dict(row))
        assert EXPECTED[kind] in row["reason"], (kind, row["reason"])
    assert (status.loc[good, "status"] == "ok").all(), status.loc[good]
    photometry = read_table(shard / "phot.parquet")
    assert set(photometry["objid"]) == set(good)
    assert len(photometry) >= len(good) and np.isfinite(photometry["flux_nmgy_r"]).all()


def test_ledger_reason_is_one_line(tmp_path):
    from clumpcat.ledger import LedgerEntry, write_status

    reason = "unreadable FITS (Header missing END card.\n  Corrupt?\n)"
    frame = write_status(tmp_path / "s.parquet", ["a", "b"], [LedgerEntry("b", "failed", "render", reason)])
    assert (
        frame.set_index("objid").loc["b", "reason"] == "unreadable FITS (Header missing END card. Corrupt? )"
    )
    assert frame.set_index("objid").loc["a", "reason"] == ""
