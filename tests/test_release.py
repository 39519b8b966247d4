"""Tests of clumpcat.catalogue.release: README from the data model, provenance, checksums."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

from clumpcat import cli, settings
from clumpcat.catalogue.datamodel import load_datamodel
from clumpcat.catalogue.release import make_release, release_readme, sha256_file, write_hats, write_sha256sums
from clumpcat.catalogue.writer import build_catalogue
from clumpcat.errors import InputError
from clumpcat.ledger import write_status
from clumpcat.tables import read_table, write_table


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_clumpcat_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("rel")
    make_shard = _load("test_catalogue").make_shard
    shard = make_shard(root, "000", {"a0": "clumps", "a1": "none", "a2": "no_cutout"}, seed=3)
    config = root / "config.yaml"
    config.write_text("survey: synthetic\nscore_threshold: 0.3\n")
    model = root / "model.pt"
    model.write_bytes(b"not really weights" * 100)
    out = root / "results"
    rc = cli.main(
        ["catalogue", "--shards", str(shard), "--out-dir", str(out), "--release",
         "--config", str(config), "--model", str(model)]
    )  # fmt: skip
    assert rc == 0
    return root, out


def test_release_contents(run_dir):
    _root, out = run_dir
    release = out / "release"
    names = sorted(p.name for p in release.iterdir())
    assert names == sorted(
        [
            "catalogue.parquet",
            "catalogue.fits",
            "ledger.parquet",
            "README.md",
            "provenance.json",
            "SHA256SUMS",
        ]
    )
    assert (release / "catalogue.parquet").read_bytes() == (out / "catalogue.parquet").read_bytes()


def test_readme_lists_every_column(run_dir):
    _root, out = run_dir
    text = (out / "release" / "README.md").read_text()
    model = load_datamodel()
    for i, c in enumerate(model.columns, start=1):
        assert f"| {i} | `{c.name}` | {c.dtype} | {c.unit} |" in text
    assert "input galaxies: 3" in text
    assert "detection score threshold: 0.3" in text
    assert release_readme(model).count("\n| ") >= len(model.columns)
    # The photometry as applied: the PSF image where present, the fallback
    # named, and the rows counted per source from the catalogue itself.
    assert "a clipped quadratic surface fitted to the annulus" in text
    assert "the cutout's own PSF image (`PSF_<BAND>` HDU) where it has one, else of an analytic" in text
    assert "Aperture corrections in this release: u: 1 gaussian" in text and "r: 1 gaussian" in text
    assert "Gaussian-PSF" not in text


def test_provenance(run_dir):
    root, out = run_dir
    record = json.loads((out / "release" / "provenance.json").read_text())
    assert record["model"]["sha256"] == hashlib.sha256((root / "model.pt").read_bytes()).hexdigest()
    assert record["config"]["content"] == {"survey": "synthetic", "score_threshold": 0.3}
    assert record["packages"]["numpy"] and record["packages"]["photutils"]
    assert record["created_utc"].endswith("Z")
    assert "git_commit" in record
    assert record["counts"]["n_galaxies"] == 3
    assert record["counts"]["status_counts"] == {"ok": 1, "no_clumps": 1, "failed": 1}


def test_checksums_verify(run_dir):
    _root, out = run_dir
    release = out / "release"
    lines = (release / "SHA256SUMS").read_text().splitlines()
    assert len(lines) == 5
    for line in lines:
        digest, name = line.split("  ", 1)
        assert sha256_file(release / name) == digest
    if shutil.which("sha256sum"):
        result = subprocess.run(
            ["sha256sum", "-c", "SHA256SUMS"], cwd=release, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_tampered_file_fails_the_check(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    write_sha256sums(tmp_path)
    (tmp_path / "a.txt").write_text("y")
    digest, name = (tmp_path / "SHA256SUMS").read_text().split()
    assert sha256_file(tmp_path / name) != digest


def test_release_errors(tmp_path, run_dir):
    with pytest.raises(InputError, match="missing catalogue.parquet, catalogue.fits, ledger.parquet"):
        make_release(tmp_path)
    _root, out = run_dir
    with pytest.raises(InputError, match="--model .*: no such file"):
        make_release(out, release_dir=tmp_path / "r", model_path=tmp_path / "nope.pt")


def test_hats_is_optional(run_dir, tmp_path, caplog, monkeypatch):
    _root, out = run_dir
    import builtins

    real_import = builtins.__import__

    def no_hats(name, *args, **kwargs):
        if name.startswith("hats_import"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_hats)
    assert write_hats(out / "catalogue.parquet", tmp_path / "hats") is None
    assert "HATS copy skipped" in caplog.text
    release = make_release(out, release_dir=tmp_path / "rel", hats=True)
    assert json.loads((release / "provenance.json").read_text())["hats"] == "false"
    assert not (release / "hats").exists()


def test_hats_copy_when_available(run_dir, tmp_path):
    pytest.importorskip("hats_import")
    hats = pytest.importorskip("hats")
    _root, out = run_dir
    release = make_release(out, release_dir=tmp_path / "rel", hats=True)
    catalog = hats.read_hats(release / "hats" / "clumpcat")
    assert catalog.catalog_info.total_rows == 1
    assert "hats/clumpcat/hats.properties" in (release / "SHA256SUMS").read_text()


def test_release_describes_and_records_the_settings_that_ran(tmp_path, run_dir):
    # A --config override (gaussian aperture correction, median background) must
    # reach the README's method paragraph and provenance, not the file's defaults.
    root, out = run_dir
    effective = {"photometry": {"aperture_correction": "gaussian", "background": "median"}}
    rc = cli.main(
        ["catalogue", "--shards", str(root / "shards" / "000"), "--out-dir", str(tmp_path),
         "--release", "--effective-config", json.dumps(effective)]
    )  # fmt: skip
    assert rc == 0
    text = (tmp_path / "release" / "README.md").read_text()
    assert "else of an analytic gaussian PSF" in text and "median of the annulus" in text
    record = json.loads((tmp_path / "release" / "provenance.json").read_text())
    assert record["effective_config"]["photometry"]["aperture_correction"] == "gaussian"
    # every default filled in: the record alone says what ran
    assert record["effective_config"]["postprocess"]["host_nsigma"] == 0.25
    default_text = (out / "release" / "README.md").read_text()
    assert "else of an analytic moffat PSF" in default_text and "defaults of this version" in default_text


def test_bad_effective_config_names_the_option(tmp_path, run_dir):
    root, _out = run_dir
    args = ["catalogue", "--shards", str(root / "shards" / "000"), "--out-dir", str(tmp_path), "--release"]
    assert cli.main([*args, "--effective-config", "{not json"]) == 1
    assert cli.main([*args, "--effective-config", json.dumps({"photometry": {"nope": 1}})]) == 1


ARCSEC = 1.0 / 3600.0
PARENT = pd.DataFrame(
    {
        "objid": ["g1", "g2", "g3", "g4"],
        "ra": [20.0, 20.1, 20.2, 20.3],
        "dec": [1.0, 1.0, 1.0, 1.0],
        "petro_r90_r": [3.0, 3.0, 3.0, 3.0],
    }
)


def _hsc_run(shard, galaxies, n_clumps=2):
    """A finished shard: ``n_clumps`` catalogue clumps per galaxy (photometry reduced to what the catalogue needs)."""
    shard.mkdir(parents=True)
    write_table(galaxies, shard / "galaxies.parquet")
    rows = [
        {"objid": o, "score": 0.9 - 0.1 * k, "label": "normal", "ra": ra + (k + 1) * ARCSEC, "dec": dec}
        for o, ra, dec in zip(galaxies["objid"], galaxies["ra"], galaxies["dec"], strict=True)
        for k in range(n_clumps)
    ]
    write_table(pd.DataFrame(rows), shard / "photometry.parquet")
    write_status(shard / "status-photometry.parquet", galaxies["objid"], [])
    return shard


def test_release_after_two_crossmatches_holds_the_union(tmp_path):
    """Reruns over new HSC tables: the release unites the runs, every galaxy once, no clump twice."""
    parent, results = tmp_path / "parent.parquet", tmp_path / "results"
    PARENT.to_parquet(parent)
    # The HSC rerun configuration (docs/fetch.md), as the workflow passes it.
    effective = settings.effective_config({"survey": "hsc", "crossmatch": {"hsc_objects": "hsc.csv"}})

    def crossmatch(objids, processed=results / "ledger.parquet"):
        objects, out = tmp_path / "hsc.csv", tmp_path / "matches.parquet"
        hsc = PARENT[PARENT["objid"].isin(objids)]
        pd.DataFrame({"object_id": range(len(hsc)), "ra": hsc["ra"], "dec": hsc["dec"]}).to_csv(objects)
        argv = ["crossmatch", "--galaxies", str(parent), "--hsc-objects", str(objects), "--out", str(out)]
        history = results / "crossmatch" / "processed.parquet"
        assert cli.main([*argv, "--processed", str(processed), "--history", str(history)]) == 0
        return read_table(out)

    def run_and_release(name, matches, n_clumps=2, config=effective):
        shard = _hsc_run(tmp_path / name / "shards" / "000", matches, n_clumps)
        build_catalogue([shard], results)
        release = make_release(results, effective_config=config)
        return pd.read_parquet(release / "catalogue.parquet"), pd.read_parquet(release / "ledger.parquet")

    first = crossmatch(["g1", "g2"])
    assert first["objid"].tolist() == ["g1", "g2"]
    cat, ledger = run_and_release("run1", first)
    assert len(cat) == 4 and len(ledger) == 2
    second = crossmatch(["g1", "g2", "g3", "g4"])  # the new table covers the old galaxies too
    assert second["objid"].tolist() == ["g3", "g4"]
    cat, ledger = run_and_release("run2", second)
    assert len(pd.read_parquet(results / "catalogue.parquet")) == 4  # this run's own catalogue: new galaxies
    assert len(cat) == 8 and sorted(ledger["objid"]) == ["g1", "g2", "g3", "g4"]
    assert cat["clump_id"].is_unique and cat["clump_id"].tolist() == list(range(1, 9))
    assert not cat.duplicated(["objid", "clump_centre_ra", "clump_centre_dec"]).any()
    with fits.open(results / "release" / "catalogue.fits") as hdul:
        assert hdul[1].header["NAXIS2"] == 8
        assert sorted(hdul[1].data["clump_id"]) == list(range(1, 9))
    assert (
        pq.read_schema(results / "release" / "catalogue.parquet").field("clump_flux_y").metadata[b"unit"]
        == b"Jy"
    )
    # The same catalogue released again changes nothing (same ids).
    again, _ = run_and_release("run2-again", second)
    pd.testing.assert_frame_equal(again, cat)
    # A galaxy processed again (g1, now one clump) appears once, from the latest run.
    cat, ledger = run_and_release("retry", PARENT[PARENT["objid"] == "g1"], n_clumps=1)
    assert len(cat) == 7 and (cat["objid"] == "g1").sum() == 1 and cat["clump_id"].is_unique
    assert len(ledger) == 4 and ledger["objid"].is_unique
    # The release's ledger names every galaxy of every run: nothing is left to do.
    assert crossmatch(["g1", "g2", "g3", "g4"], processed=results / "release" / "ledger.parquet").empty
    # Without the cross-match configuration a release is its run's catalogue alone.
    cat, ledger = run_and_release(
        "plain", PARENT.iloc[:1], config=settings.effective_config({"survey": "hsc"})
    )
    assert len(cat) == 2 and len(ledger) == 1
    assert np.array_equal(cat["clump_id"], [1, 2])
