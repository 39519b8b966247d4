"""The galaxy-table contract: validation errors name the rows."""

import numpy as np
import pandas as pd
import pytest

from clumpcat.errors import InputError
from clumpcat.survey.galaxies import read_galaxies, validate_galaxies


def table(**overrides):
    frame = pd.DataFrame({"objid": ["a1", "a2", "a3"], "ra": [10.0, 11.0, 12.0], "dec": [-1.0, 0.0, 1.0]})
    for key, value in overrides.items():
        frame[key] = value
    return frame


def test_valid_table_is_normalised():
    frame = validate_galaxies(table(objid=[1237648720693755918, 2, 3]))
    assert frame["objid"].tolist() == ["1237648720693755918", "2", "3"]
    assert frame["ra"].dtype == np.float64


def test_missing_required_column_is_named():
    with pytest.raises(InputError, match="missing required column.*dec"):
        validate_galaxies(table().drop(columns="dec"), source="gals.parquet")


def test_duplicate_objid_names_rows():
    with pytest.raises(InputError, match=r"duplicate objid \(a1\) in row\(s\) 0, 2"):
        validate_galaxies(table(objid=["a1", "b", "a1"]))


def test_nonfinite_coordinates_name_rows():
    with pytest.raises(InputError, match=r"non-finite dec in row\(s\) 1"):
        validate_galaxies(table(dec=[0.0, np.nan, 1.0]))


def test_out_of_range_dec():
    with pytest.raises(InputError, match=r"dec outside \[-90, 90\] deg in row\(s\) 2"):
        validate_galaxies(table(dec=[0.0, 1.0, 91.0]))


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", ".hidden", "sp ace"])
def test_objid_that_could_name_a_path_is_refused(bad):
    with pytest.raises(InputError, match=r"objid outside .* in row\(s\) 1"):
        validate_galaxies(table(objid=["ok", bad, "ok2"]))


def test_float_objid_is_refused():
    with pytest.raises(InputError, match="not a float"):
        validate_galaxies(table(objid=[1.0, 2.0, 3.0]))


def test_every_problem_in_one_message(tmp_path):
    path = tmp_path / "g.csv"
    table(objid=["x", "x", "y"], ra=[1.0, np.inf, 2.0]).to_csv(path, index=False)
    with pytest.raises(InputError) as info:
        read_galaxies(path)
    message = str(info.value)
    assert str(path) in message and "duplicate objid" in message and "non-finite ra" in message
