"""Tests of clumpcat.catalogue.writer and clumpcat.catalogue.datamodel: merge, FITS, ledger."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.table import Table

from clumpcat import cli
from clumpcat.catalogue.datamodel import DATAMODEL_PATH, load_datamodel
from clumpcat.catalogue.writer import (
    build_catalogue,
    catalogue_rows,
    find_shards,
    last_status_path,
    write_fits_catalogue,
)
from clumpcat.constants import EXTINCTION_R, HSC_BANDS, HSC_EXTINCTION_R, NANOMAGGY_JY, SDSS_BANDS
from clumpcat.errors import InputError
from clumpcat.ledger import LedgerEntry, write_status
from clumpcat.photometry.apertures import (
    PhotometrySettings,
    photometry_columns,
    photometry_metadata,
    photometry_shard,
)
from clumpcat.survey.cutouts import Cutout, write_cutout
from clumpcat.survey.psf import draw_psf
from clumpcat.tables import field_metadata, write_table


def _load_synthetic():
    """The synthetic-galaxy maker of test_photometry.py (tests/ is not a package)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "_clumpcat_phot_synth", Path(__file__).with_name("test_photometry.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_synth = _load_synthetic()
make_synthetic_galaxy, clumps_from_truth = _synth.make_synthetic_galaxy, _synth.clumps_from_truth

#: The paper's 67 released column names, as DESIGN.md lists them.
RELEASED = (
    ["specobjid", "dr7objid", "clump_id", "clump_label_id", "clump_label_name", "clump_score"]
    + ["clump_centre_ra", "clump_centre_dec"]
    + [f"clump_flux_{b}" for b in "ugriz"]
    + [f"clump_flux_err_{b}" for b in "ugriz"]
    + [f"clump_mag_{b}" for b in "ugriz"]
    + [f"clump_ext_mag_{b}" for b in "ugriz"]
    + [f"clump_mag_corr_{b}" for b in "ugriz"]
    + ["clump_mag_corr_u_g", "clump_mag_corr_g_r", "clump_mag_corr_r_i", "clump_mag_corr_i_z"]
    + ["clump_flux_ratio", "is_clump_3pct", "is_clump_8pct", "galaxy_ra", "galaxy_dec", "galaxy_z"]
    + [f"galaxy_mag_{b}" for b in "ugriz"]
    + [f"galaxy_mag_err_{b}" for b in "ugriz"]
    + [f"galaxy_flux_{b}" for b in "ugriz"]
    + ["galaxy_expAB_r", "galaxy_expRad_r", "galaxy_lmass", "galaxy_lssfr"]
    + [f"galaxy_mag_corr_{b}" for b in "ugriz"]
)
EXTRAS = ["objid", "x", "y", "box_x0", "box_y0", "box_x1", "box_y1", "FWHM_r_px"]
BIG_SPECOBJID = 13_000_000_000_000_000_000  # > 2**63, as for SDSS plates above 8191


def test_datamodel_columns():
    model = load_datamodel()
    assert len(RELEASED) == 67
    assert model.released_names == RELEASED
    assert model.names[:67] == RELEASED
    assert model.names[67 : 67 + len(EXTRAS)] == EXTRAS
    for c in model.columns:
        assert c.description
    assert model["clump_flux_u"].unit == "Jy"
    assert model["galaxy_ra"].unit == "deg"
    assert model["clump_mag_r"].unit == "mag"
    assert DATAMODEL_PATH.name == "catalogue_datamodel.yaml"


def test_datamodel_errors(tmp_path):
    bad = tmp_path / "dm.yaml"
    bad.write_text(
        "columns:\n"
        "  - {name: a, dtype: float64, unit: '', description: x}\n"
        "  - {name: a, dtype: complex, unit: '', description: y}\n"
        "  - {name: b, unit: ''}\n"
    )
    with pytest.raises(
        InputError, match=r"duplicate name a.*dtype must be one of.*missing dtype, description"
    ):
        load_datamodel(bad)
    bad.write_text("- 1\n")
    with pytest.raises(InputError, match="needs a 'columns' list"):
        load_datamodel(bad)


def _galaxy_row(objid, k):
    row = {
        "objid": objid,
        "ra": 150.0 + k,
        "dec": 2.0 + k,
        "redshift": 0.05 + 0.01 * k,
        "axis_ratio": 0.6,
        "exp_rad_r": 4.2,
        "log_mstar": 10.1,
        "log_ssfr": -9.8,
        "ebv": 0.04,
        "specobjid": "" if objid.startswith("b") else str(BIG_SPECOBJID + k),
        "dr7objid": 587722981741363294 + k,
    }
    for b in SDSS_BANDS:
        row[f"host_mag_{b}"] = 16.0 + 0.1 * k
        row[f"host_mag_err_{b}"] = 0.02
    return row


def _gaussian_psf(fwhm_px: float) -> np.ndarray:
    """The PSF image of make_synthetic_galaxy's clumps (pixelated FWHM ``fwhm_px``)."""
    return draw_psf("gaussian", np.sqrt(fwhm_px**2 - 8 * np.log(2) / 12), half_width=12)


def make_shard(root, name, spec, seed):
    """A shard folder; ``spec`` maps objid -> 'clumps', 'none', 'render_fail' or 'no_cutout'."""
    rng = np.random.default_rng(seed)
    shard = root / "shards" / name
    cut_dir = root / "cutouts"
    shard.mkdir(parents=True)
    gal_rows, clump_rows, upstream = [], [], []
    for k, (objid, kind) in enumerate(spec.items()):
        gal_rows.append(_galaxy_row(objid, k))
        if kind in ("clumps", "no_cutout"):
            cutout, truth, _ = make_synthetic_galaxy(rng, objid, size=64, n_clumps=2, scale_px=6.0)
            clumps = clumps_from_truth(truth)
            clumps["score"] = [0.9, 0.2]
            clumps["detection_snr"] = [25.0, 4.0]  # postprocess's column, carried to the catalogue
            clumps.loc[1, "label"] = "odd"
            clump_rows.append(clumps)
            if kind == "clumps":
                if objid.startswith("b"):  # b-galaxies carry their PSF images
                    cutout.psf = {b: _gaussian_psf(cutout.fwhm_pixels(b)) for b in cutout.bands}
                write_cutout(cut_dir / f"{objid}.fits", cutout)
        if kind == "render_fail":
            upstream.append(LedgerEntry(objid, "failed", "render", "band G all NaN"))
    galaxies = pd.DataFrame(gal_rows)
    clumps = pd.concat(clump_rows, ignore_index=True) if clump_rows else clumps_from_truth(pd.DataFrame(
        {"objid": [], "x": [], "y": [], "ra": [], "dec": []}))  # fmt: skip
    write_table(galaxies, shard / "galaxies.parquet")
    write_table(clumps, shard / "clumps.parquet")
    status = write_status(shard / "status-postprocess.parquet", galaxies["objid"], upstream)
    ok = status.loc[status["status"] == "ok", "objid"].tolist()
    phot, failures = photometry_shard(galaxies, clumps, cut_dir, ok, ebv_source="table", host_mask_fn=None)
    meta = photometry_metadata(PhotometrySettings())
    write_table(phot, shard / "photometry.parquet", photometry_columns(), meta)
    write_status(shard / "status-photometry.parquet", galaxies["objid"], failures, upstream=status)
    return shard


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    a = make_shard(root, "000", {"a0": "clumps", "a1": "none", "a2": "render_fail"}, seed=1)
    b = make_shard(root, "001", {"b0": "clumps", "b1": "no_cutout"}, seed=2)
    out = root / "results"
    rc = cli.main(["catalogue", "--shards", str(a), str(b), "--out-dir", str(out)])
    assert rc == 0
    return root, out


def test_outputs_exist_and_ledger_accounts_for_every_galaxy(results):
    _root, out = results
    ledger = pd.read_parquet(out / "ledger.parquet").set_index("objid")
    assert len(ledger) == 5
    assert ledger.loc["a0", "status"] == "ok" and ledger.loc["a0", "n_clumps"] == 1
    assert ledger.loc["a0", "n_candidates"] == 2
    assert ledger.loc["a1", "status"] == "no_clumps"
    assert tuple(ledger.loc["a2", ["status", "stage", "reason"]]) == ("failed", "render", "band G all NaN")
    assert tuple(ledger.loc["b1", ["status", "stage"]]) == ("failed", "photometry")
    assert ledger.loc["b1", "reason"] == "file not found"
    assert list(ledger["shard"]) == ["000", "000", "000", "001", "001"]


def test_clumps_keep_every_score(results):
    _root, out = results
    clumps = pd.read_parquet(out / "clumps.parquet")
    assert len(clumps) == 6  # a0, b0 and b1 (photometry failed) with 2 candidates each
    assert sorted(clumps["score"].unique()) == [0.2, 0.9]


def test_catalogue_columns_values_and_metadata(results):
    _root, out = results
    model = load_datamodel()
    table = pq.read_table(out / "catalogue.parquet")
    assert table.column_names == model.names
    docs = field_metadata(table)
    for c in model.columns:
        assert docs[c.name] == (c.unit, c.description)
    cat = table.to_pandas()
    assert len(cat) == 2 and (cat["clump_score"] >= 0.3).all()
    assert list(cat["objid"]) == ["a0", "b0"]
    assert list(cat["clump_id"]) == [1, 2]
    assert (cat["clump_label_id"] == 1).all() and (cat["clump_label_name"] == "normal").all()
    row = cat.iloc[0]
    assert row["specobjid"] == BIG_SPECOBJID
    assert pd.isna(cat.iloc[1]["specobjid"])  # empty string in the galaxy table -> null
    assert row["dr7objid"] == 587722981741363294
    assert row["galaxy_ra"] == 150.0 and row["galaxy_z"] == pytest.approx(0.05)
    assert row["galaxy_expAB_r"] == 0.6 and row["galaxy_expRad_r"] == 4.2
    assert row["galaxy_lmass"] == 10.1 and row["galaxy_lssfr"] == -9.8
    assert row["galaxy_flux_r"] == pytest.approx(NANOMAGGY_JY * 10 ** ((22.5 - 16.0) / 2.5))
    assert row["galaxy_mag_corr_u"] == pytest.approx(16.0 - EXTINCTION_R["u"] * 0.04)
    assert row["clump_mag_corr_r"] == pytest.approx(row["clump_mag_r"] - EXTINCTION_R["r"] * 0.04)
    assert row["clump_mag_corr_g_r"] == pytest.approx(row["clump_mag_corr_g"] - row["clump_mag_corr_r"])
    assert row["clump_flux_ratio"] == pytest.approx(row["clump_flux_u"] / (NANOMAGGY_JY * 10 ** (6.5 / 2.5)))
    assert row["FWHM_r_px"] == pytest.approx(1.35 / 0.396)
    assert row["box_x1"] - row["box_x0"] == pytest.approx(16.0)
    assert row["detection_snr"] == 25.0 and pd.isna(row["snr_g"])
    # Aperture corrections: a0 has no PSF image (the Gaussian fallback), b0 has one.
    for b in SDSS_BANDS:
        assert list(cat[f"apcorr_source_{b}"]) == ["gaussian", "psf"]


def test_fits_matches_parquet(results):
    _root, out = results
    model = load_datamodel()
    cat = pd.read_parquet(out / "catalogue.parquet")
    with fits.open(out / "catalogue.fits") as hdul:
        hdul.verify("exception")
        header = hdul[1].header
        assert hdul[1].name == "CATALOGUE"
        assert hdul[0].header["SCORECUT"] == 0.3
        assert (hdul[0].header["APCORR"], hdul[0].header["BKGMETH"]) == ("gaussian", "auto")
        for i, c in enumerate(model.columns, start=1):
            assert header[f"TTYPE{i}"] == c.name
            if c.name in ("galaxy_lmass", "galaxy_lssfr"):  # dex units are not FITS units
                assert f"TUNIT{i}" not in header
                assert header[f"TCOMM{i}"].startswith(f"[{c.unit}]")
                continue
            assert header[f"TCOMM{i}"] == c.description[:68].rstrip()
            if c.unit:
                assert header[f"TUNIT{i}"] == c.unit
    table = Table.read(out / "catalogue.fits", hdu=1)
    assert table.colnames == model.names
    assert len(table) == len(cat)
    assert int(table["specobjid"][0]) == BIG_SPECOBJID
    assert int(table["specobjid"][1]) == 0  # null -> 0 in FITS (no TNULL for unsigned columns)
    np.testing.assert_allclose(np.asarray(table["clump_flux_r"]), cat["clump_flux_r"])
    assert list(table["clump_label_name"]) == list(cat["clump_label_name"])
    assert list(table["objid"]) == ["a0", "b0"]
    assert table["is_clump_3pct"].dtype == bool
    assert str(table["clump_flux_g"].unit) == "Jy"


def test_fits_streams_in_batches(results, tmp_path):
    _root, out = results
    small = tmp_path / "small.fits"
    write_fits_catalogue(out / "catalogue.parquet", small, batch_rows=1)
    with fits.open(small) as a, fits.open(out / "catalogue.fits") as b:
        assert a[1].data.tobytes() == b[1].data.tobytes()


def test_rerun_gives_the_same_catalogue(results, tmp_path):
    root, out = results
    shards = find_shards(shards_dir=root / "shards")
    assert [s.name for s in shards] == ["000", "001"]
    summary = build_catalogue(shards, tmp_path / "again")
    assert summary.n_galaxies == 5 and summary.n_catalogue == 2 and summary.n_candidates == 6
    assert pq.read_table(tmp_path / "again" / "catalogue.parquet").equals(
        pq.read_table(out / "catalogue.parquet")
    )
    lower = build_catalogue(shards, tmp_path / "all", score_threshold=0.0, write_fits=False)
    assert lower.n_catalogue == 4
    assert lower.status_counts == {"ok": 2, "no_clumps": 1, "failed": 2}


def test_input_table_must_match_the_ledger(results, tmp_path):
    root, _out = results
    shards = find_shards(shards_dir=root / "shards")
    inputs = pd.concat([pd.read_parquet(s / "galaxies.parquet") for s in shards], ignore_index=True)
    write_table(inputs, tmp_path / "all.parquet")
    build_catalogue(shards, tmp_path / "ok", input_galaxies=tmp_path / "all.parquet", write_fits=False)
    write_table(pd.concat([inputs, pd.DataFrame([_galaxy_row("lost1", 9)])]), tmp_path / "more.parquet")
    with pytest.raises(InputError, match="6 input galaxies but 5 ledger rows; in no shard: lost1"):
        build_catalogue(shards, tmp_path / "bad", input_galaxies=tmp_path / "more.parquet", write_fits=False)
    assert not any((tmp_path / "bad").iterdir())


def test_last_status_and_shard_errors(tmp_path):
    shard = tmp_path / "s"
    shard.mkdir()
    for stage in ("render", "photometry", "detect"):
        (shard / f"status-{stage}.parquet").write_bytes(b"")
    assert last_status_path(shard).name == "status-photometry.parquet"
    with pytest.raises(InputError, match="without galaxies.parquet"):
        find_shards([shard])
    with pytest.raises(InputError, match="no shards"):
        find_shards([])


def test_missing_status_marks_galaxies_failed(tmp_path):
    shard = tmp_path / "shards" / "x"
    shard.mkdir(parents=True)
    write_table(pd.DataFrame([_galaxy_row("q0", 0), _galaxy_row("q1", 1)]), shard / "galaxies.parquet")
    summary = build_catalogue([shard], tmp_path / "out", write_fits=False)
    ledger = pd.read_parquet(tmp_path / "out" / "ledger.parquet")
    assert summary.n_galaxies == 2 and list(ledger["status"]) == ["failed", "failed"]
    assert set(ledger["stage"]) == {"catalogue"}


def test_unknown_label_is_an_error():
    model = load_datamodel()
    galaxies = pd.DataFrame([_galaxy_row("z0", 0)])
    phot = pd.DataFrame({"objid": ["z0"], "score": [0.9], "label": ["weird"], "ra": [1.0], "dec": [2.0]})
    with pytest.raises(InputError, match="label must be one of normal, odd"):
        catalogue_rows(galaxies, phot, model)
    phot["objid"] = "other"
    with pytest.raises(InputError, match="not in the shard's galaxy table: other"):
        catalogue_rows(galaxies, phot, model)


#: HSC bands of the test cutout and the synthetic SDSS band whose pixels each takes.
HSC_FROM_SDSS = {"g": "g", "r": "r", "i": "i", "z": "z", "y": "z"}
HSC_EBV = 0.06


def make_hsc_shard(root, seed=5):
    """A grizy shard measured as photometry does for survey=hsc (galaxy table with host_mag_g..y)."""
    rng = np.random.default_rng(seed)
    shard, cut_dir = root / "shards" / "hsc", root / "cutouts"
    shard.mkdir(parents=True)
    rows, clumps = [], []
    for k, objid in enumerate(["h0", "h1"]):
        row = _galaxy_row(objid, k)
        row.update(ebv=HSC_EBV, host_mag_u=np.nan, host_mag_y=16.2, host_mag_err_y=0.03)
        rows.append(row)
        sdss, truth, _ = make_synthetic_galaxy(rng, objid, size=64, n_clumps=2, scale_px=6.0)
        cutout = Cutout(
            objid,
            {h: sdss.images[s] for h, s in HSC_FROM_SDSS.items()},
            sdss.wcs,
            {h: sdss.psf_fwhm[s] for h, s in HSC_FROM_SDSS.items()},
            {h: sdss.ivar[s] for h, s in HSC_FROM_SDSS.items()},
        )
        write_cutout(cut_dir / f"{objid}.fits", cutout)
        clumps.append(clumps_from_truth(truth))
    galaxies, clumps = pd.DataFrame(rows), pd.concat(clumps, ignore_index=True)
    write_table(galaxies, shard / "galaxies.parquet")
    write_table(clumps, shard / "clumps.parquet")
    status = write_status(shard / "status-postprocess.parquet", galaxies["objid"], [])
    phot, failures = photometry_shard(
        galaxies,
        clumps,
        cut_dir,
        ["h0", "h1"],
        bands=HSC_BANDS,
        survey="hsc",
        ebv_source="table",
        host_mask_fn=None,
    )
    assert not failures
    write_table(phot, shard / "photometry.parquet", photometry_columns(HSC_BANDS))
    write_status(shard / "status-photometry.parquet", galaxies["objid"], [], upstream=status)
    return shard


def test_hsc_rows_extinction_flux_ratio_and_y_band(results, tmp_path):
    """HSC rows: HSC R_b in grizy, the g-band flux ratio and its flags, y kept; SDSS rows keep u."""
    root, _out = results
    hsc = make_hsc_shard(tmp_path)
    summary = build_catalogue([root / "shards" / "000", hsc], tmp_path / "out")
    assert summary.n_catalogue == 5  # a0's one clump above the cut, h0 and h1 two each
    model = load_datamodel()
    assert model.names[:67] == RELEASED  # the published columns stay first, in order
    cat = pd.read_parquet(tmp_path / "out" / "catalogue.parquet")
    sdss, rows = cat[cat["objid"] == "a0"].iloc[0], cat[cat["objid"].str.startswith("h")]
    assert len(rows) == 4 and set(rows["survey"]) == {"hsc"} and set(rows["clump_flux_ratio_band"]) == {"g"}
    assert (sdss["survey"], sdss["clump_flux_ratio_band"]) == ("sdss", "u")
    for band in HSC_BANDS:
        r_b = HSC_EXTINCTION_R[band]
        assert rows[f"clump_ext_mag_{band}"].to_numpy() == pytest.approx(r_b * HSC_EBV)
        assert rows[f"clump_mag_corr_{band}"].to_numpy() == pytest.approx(
            rows[f"clump_mag_{band}"] - r_b * HSC_EBV
        )
        assert rows[f"galaxy_mag_corr_{band}"].to_numpy() == pytest.approx(
            rows[f"galaxy_mag_{band}"] - r_b * HSC_EBV
        )
        assert np.isfinite(rows[f"clump_flux_{band}"]).all()
    # The ratio is the g-band clump flux over the host's g flux, both in Jy; the flags follow it.
    ratio = rows["clump_flux_g"] / rows["galaxy_flux_g"]
    assert rows["clump_flux_ratio"].to_numpy() == pytest.approx(ratio.to_numpy(), rel=1e-9)
    assert (rows["is_clump_3pct"] == (ratio >= 0.03)).all() and (
        rows["is_clump_8pct"] == (ratio >= 0.08)
    ).all()
    assert rows["is_clump_3pct"].any()
    assert rows["clump_flux_u"].isna().all() and rows["galaxy_mag_corr_u"].isna().all()
    assert rows["galaxy_flux_y"].to_numpy() == pytest.approx(NANOMAGGY_JY * 10 ** ((22.5 - 16.2) / 2.5))
    assert np.isfinite(rows[["clump_mag_corr_y", "clump_mag_corr_z_y", "clump_mag_err_y"]]).all().all()
    assert set(rows["apcorr_source_y"]) == {"gaussian"} and (rows["phot_flag_y"] == 0).all()
    assert (
        pd.isna(sdss["clump_flux_y"]) and pd.isna(sdss["clump_mag_corr_y"]) and pd.isna(sdss["galaxy_mag_y"])
    )
    assert sdss["clump_ext_mag_u"] == pytest.approx(EXTINCTION_R["u"] * 0.04)
    # FITS carries the same columns and values.
    table = Table.read(tmp_path / "out" / "catalogue.fits", hdu=1)
    assert table.colnames == model.names
    np.testing.assert_allclose(np.asarray(table["clump_flux_y"]), cat["clump_flux_y"])
    assert list(table["clump_flux_ratio_band"]) == list(cat["clump_flux_ratio_band"])
    assert list(table["is_clump_3pct"]) == list(cat["is_clump_3pct"])
