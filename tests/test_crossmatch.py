"""Cross-matching a new HSC object table against the galaxy table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from clumpcat.cli import main
from clumpcat.errors import InputError
from clumpcat.survey.crossmatch import crossmatch_hsc, processed_objids
from clumpcat.survey.galaxies import validate_galaxies
from clumpcat.tables import field_metadata, read_table

ARCSEC = 1.0 / 3600.0

GALAXIES = validate_galaxies(
    pd.DataFrame(
        {
            "objid": ["a", "b", "c", "d", "e"],
            "ra": [10.0, 10.1, 10.2, 10.3, 359.9999],
            "dec": [0.0, 0.1, 0.2, 0.3, 0.0],
            "petro_r90_r": [3.0, 2.0, 4.0, 5.0, 3.0],
        }
    )
)

HSC = pd.DataFrame(
    {
        "object_id": [101, 102, 103, 104, 105, 106],
        "ra": [10.0 + 0.4 * ARCSEC, 10.0 - 0.8 * ARCSEC, 10.1 + 3 * ARCSEC, 10.2, 50.0, 0.0 + 0.1 * ARCSEC],
        "dec": [0.0, 0.0, 0.1, 0.2 + 0.2 * ARCSEC, 0.0, 0.0],
    }
)


def test_nearest_match_within_radius():
    out = crossmatch_hsc(GALAXIES, HSC, radius_arcsec=1.0)
    assert out["objid"].tolist() == ["a", "c", "e"]  # b is 3" away, d has no neighbour
    row = out.set_index("objid").loc["a"]
    assert row["hsc_object_id"] == 101 and row["hsc_n_matches"] == 2
    assert row["hsc_sep_arcsec"] == pytest.approx(0.4, abs=1e-3)
    assert out.set_index("objid").loc["e", "hsc_object_id"] == 106  # across RA = 0
    assert out.set_index("objid").loc["c", "petro_r90_r"] == 4.0  # galaxy columns kept
    assert crossmatch_hsc(GALAXIES, HSC, radius_arcsec=5.0)["objid"].tolist() == ["a", "b", "c", "e"]


def test_processed_galaxies_are_left_out(tmp_path):
    ledger = tmp_path / "ledger.parquet"
    pd.DataFrame({"objid": ["a", "c"], "status": ["ok", "failed"]}).to_parquet(ledger)
    seen = processed_objids([ledger, tmp_path / "absent.parquet"])
    assert seen == {"a", "c"}
    assert processed_objids([ledger], retry_failed=True) == {"a"}
    out = crossmatch_hsc(GALAXIES, HSC, 1.0, processed=seen)
    assert out["objid"].tolist() == ["e"]
    assert crossmatch_hsc(GALAXIES, HSC, 1.0, processed=set(GALAXIES["objid"])).empty


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(InputError, match="radius-arcsec must be > 0"):
        crossmatch_hsc(GALAXIES, HSC, 0.0)
    with pytest.raises(InputError, match="missing column.*object_id"):
        crossmatch_hsc(GALAXIES, HSC.rename(columns={"object_id": "id"}), 1.0)
    bad = HSC.copy()
    bad.loc[2, "dec"] = np.nan
    with pytest.raises(InputError, match=r"non-finite ra/dec in row\(s\) 2"):
        crossmatch_hsc(GALAXIES, bad, 1.0)
    table = tmp_path / "t.parquet"
    pd.DataFrame({"id": [1]}).to_parquet(table)
    with pytest.raises(InputError, match="no 'objid' column"):
        processed_objids([table])


def test_cli_writes_a_galaxy_table(tmp_path):
    gal, hsc, out = tmp_path / "g.parquet", tmp_path / "hsc.csv", tmp_path / "new.parquet"
    GALAXIES.to_parquet(gal)
    HSC.to_csv(hsc, index=False)
    ledger = tmp_path / "ledger.parquet"
    pd.DataFrame({"objid": ["e"], "status": ["ok"]}).to_parquet(ledger)
    argv = [
        "crossmatch",
        "--galaxies",
        str(gal),
        "--hsc-objects",
        str(hsc),
        "--out",
        str(out),
        "--radius-arcsec",
        "1.5",
        "--processed",
        str(ledger),
    ]
    assert main(argv) == 0
    table = read_table(out)
    assert table["objid"].tolist() == ["a", "c"]
    assert field_metadata(pq.read_table(out))["hsc_sep_arcsec"][0] == "arcsec"
    validate_galaxies(table)  # usable as the galaxy table of an HSC run
