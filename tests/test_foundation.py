"""Paths, shards, merges and status tables."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from clumpcat.catalogue.merge import merge_parquet
from clumpcat.errors import InputError
from clumpcat.ledger import LedgerEntry, ok_objids, write_status
from clumpcat.paths import objid_path
from clumpcat.survey.validate import split_galaxies
from clumpcat.tables import field_metadata, read_table, write_table


def test_objid_path_stays_inside_folder(tmp_path):
    assert objid_path(tmp_path, "1237.5", ".fits") == tmp_path / "1237.5.fits"
    for bad in ("..", "../x", "a/b", ".x"):
        with pytest.raises(InputError):
            objid_path(tmp_path, bad, ".fits")


def test_write_table_keeps_units(tmp_path):
    path = write_table(
        pd.DataFrame({"ra": [1.0]}), tmp_path / "t.parquet", {"ra": ("deg", "Right ascension")}
    )
    assert field_metadata(pq.read_table(path))["ra"] == ("deg", "Right ascension")


def galaxy_table(n):
    return pd.DataFrame(
        {"objid": [f"g{i}" for i in range(n)], "ra": np.linspace(1, 2, n), "dec": np.zeros(n)}
    )


def test_split_galaxies_into_shards(tmp_path):
    galaxy_table(25).to_parquet(tmp_path / "g.parquet")
    paths = split_galaxies(tmp_path / "g.parquet", 10, tmp_path / "shards")
    assert [p.parent.name for p in paths] == ["00000", "00001", "00002"]
    assert [len(read_table(p)) for p in paths] == [10, 10, 5]


def test_split_finds_duplicates_across_shards_and_leaves_nothing(tmp_path):
    frame = galaxy_table(25)
    frame.loc[22, "objid"] = "g3"
    frame.to_csv(tmp_path / "g.csv", index=False)
    with pytest.raises(InputError, match="duplicate objid: g3 in rows 3, 22"):
        split_galaxies(tmp_path / "g.csv", 10, tmp_path / "shards")
    assert not list((tmp_path / "shards").glob("*/galaxies.parquet"))


def test_split_reports_global_row_numbers(tmp_path):
    frame = galaxy_table(25)
    frame.loc[17, "ra"] = np.nan
    frame.to_parquet(tmp_path / "g.parquet")
    with pytest.raises(InputError, match=r"non-finite ra in row\(s\) 17"):
        split_galaxies(tmp_path / "g.parquet", 10, tmp_path / "shards")


def test_merge_streams_shards_with_empty_ones(tmp_path):
    a = write_table(pd.DataFrame({"objid": ["a"], "x": [1.0]}), tmp_path / "a.parquet", {"x": ("pix", "x")})
    b = write_table(
        pd.DataFrame({"objid": pd.Series([], dtype=str), "x": pd.Series([], dtype=float)}),
        tmp_path / "b.parquet",
    )
    c = write_table(pd.DataFrame({"objid": ["c", "d"], "x": [2.0, 3.0]}), tmp_path / "c.parquet")
    assert merge_parquet([a, b, c], tmp_path / "all.parquet") == 3
    merged = pq.read_table(tmp_path / "all.parquet")
    assert merged.column("objid").to_pylist() == ["a", "c", "d"]
    assert field_metadata(merged)["x"] == ("pix", "x")


def test_merge_refuses_other_columns(tmp_path):
    a = write_table(pd.DataFrame({"objid": ["a"]}), tmp_path / "a.parquet")
    b = write_table(pd.DataFrame({"id": ["b"]}), tmp_path / "b.parquet")
    with pytest.raises(InputError, match="b.parquet has columns"):
        merge_parquet([a, b], tmp_path / "all.parquet")


def test_status_carries_first_failure(tmp_path):
    first = write_status(
        tmp_path / "s1.parquet", ["a", "b", "c"], [LedgerEntry("b", "failed", "render", "bad FITS")]
    )
    second = write_status(
        tmp_path / "s2.parquet",
        ["a", "b", "c"],
        [LedgerEntry("c", "failed", "detect", "bad PNG")],
        upstream=first,
    )
    assert ok_objids(second) == ["a"]
    row = second.set_index("objid").loc["b"]
    assert (row["stage"], row["reason"]) == ("render", "bad FITS")
    assert len(read_table(tmp_path / "s2.parquet")) == 3
