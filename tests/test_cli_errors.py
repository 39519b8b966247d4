"""Every user-facing error, run from the command line: one line saying what to do, no traceback.

Each case runs ``python -m clumpcat ...`` in a subprocess, as a user or a
Snakemake rule would, and checks the exit status, that stderr holds exactly
one ERROR line naming the problem, and that no traceback is printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.servers import closed_port

SRC = Path(__file__).resolve().parents[1] / "src"


def _table(path: Path, objids, ra=None, dec=None) -> Path:
    n = len(objids)
    frame = pd.DataFrame({"objid": objids, "ra": ra or [10.0] * n, "dec": dec or [1.0] * n})
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return path


def _validate(tmp, table):
    return ["validate", "--galaxies", str(table), "--shard-size", "2", "--out-dir", str(tmp / "shards")]


def _bom_pathlike(tmp):
    path = tmp / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfobjid,ra,dec\nok,1,2\n../x,1,2\n/etc/passwd,1,2\na\\b,1,2\n")
    return _validate(tmp, path)


def _zero_bytes(tmp):
    (tmp / "zero.csv").write_bytes(b"")
    return _validate(tmp, tmp / "zero.csv")


def _header_only(tmp):
    (tmp / "header.csv").write_text("objid,ra,dec\n")
    return _validate(tmp, tmp / "header.csv")


def _not_parquet(tmp):
    (tmp / "junk.parquet").write_bytes(b"PAR1 but not really")
    return _validate(tmp, tmp / "junk.parquet")


def _utf16(tmp):
    (tmp / "u16.csv").write_bytes("objid,ra,dec\na,1,2\n".encode("utf-16"))
    return _validate(tmp, tmp / "u16.csv")


def _fetch_hsc(tmp, das_url):
    pd.DataFrame({"objid": ["h1"], "ra": [34.0], "dec": [-5.0], "petro_r90_r": [2.0]}).to_parquet(
        tmp / "g.parquet"
    )
    return [
        "fetch", "hsc", "--galaxies", str(tmp / "g.parquet"), "--status-out", str(tmp / "s.parquet"),
        "--cutouts", str(tmp / "c"), "--cache", str(tmp / "cache"), "--das-url", das_url,
        "--netrc", str(tmp / "no-netrc"), "--retries", "0",
    ]  # fmt: skip


CREDENTIALS = {"HSC_SSP_CAS_USERNAME": "u", "HSC_SSP_CAS_PASSWORD": "p"}

#: id -> (argv builder, extra environment, exit status, text the ERROR line must hold)
CASES = {
    "table-missing": (lambda t: _validate(t, t / "absent.csv"), {}, 1, "absent.csv: no such file"),
    "table-empty-file": (_zero_bytes, {}, 1, "the galaxy table is empty"),
    "table-no-rows": (_header_only, {}, 1, "has no rows"),
    "table-not-parquet": (_not_parquet, {}, 1, "cannot read the galaxy table as Parquet"),
    "table-not-utf8": (_utf16, {}, 1, "write it as UTF-8 CSV or Parquet"),
    "table-bom-pathlike-ids": (
        _bom_pathlike,
        {},
        1,
        "row(s) 1 ('../x'); objid outside [A-Za-z0-9_.-] (or starting with '.', or over 128 characters) in row(s) 2, 3 ('/etc/passwd'",
    ),
    "table-long-nul-ids": (
        lambda t: _validate(t, _table(t / "long.parquet", ["x" * 10_000, "a\x00b", "ok"])),
        {},
        1,
        "in row(s) 0, 1 ('xxxx",
    ),
    "table-duplicates-across-shards": (
        lambda t: _validate(t, _table(t / "dup.csv", ["a", "b", "c", "a"])),
        {},
        1,
        "duplicate objid: a in rows 0, 3",
    ),
    "table-nan-coordinates": (
        lambda t: _validate(t, _table(t / "nan.parquet", ["a", "b"], dec=[0.0, float("nan")])),
        {},
        1,
        "non-finite dec in row(s) 1",
    ),
    "table-missing-column": (
        lambda t: _validate(t, _nocol(t)),
        {},
        1,
        "missing required column(s) dec",
    ),
    "config-shard-size": (
        lambda t: [
            "validate",
            "--galaxies",
            str(_table(t / "g.csv", ["a"])),
            "--shard-size",
            "0",
            "--out-dir",
            "x",
        ],
        {},
        1,
        "shard_size must be >= 1",
    ),
    "config-out-of-range": (
        lambda t: [
            "postprocess",
            "--galaxies",
            "g.csv",
            "--detections",
            "d.parquet",
            "--cutouts",
            "c",
            "--out",
            "x.parquet",
            "--status-out",
            "s.parquet",
            "--nms-iou",
            "5",
        ],  # fmt: skip
        {},
        1,
        "nms_iou (--nms-iou) must be <= 1",
    ),
    "output-not-writable": (
        lambda t: _validate(t, _table(t / "g.csv", ["a"]))[:-1] + ["/proc/clumpcat-out"],
        {},
        1,
        "check the path, its permissions",
    ),
    "credentials-missing": (
        lambda t: _fetch_hsc(t, "http://127.0.0.1:9/das"),
        {"HSC_SSP_CAS_USERNAME": "", "HSC_SSP_CAS_PASSWORD": ""},
        1,
        "HSC_SSP_CAS_USERNAME and HSC_SSP_CAS_PASSWORD",
    ),
    "network-unreachable": (
        lambda t: _fetch_hsc(t, f"http://127.0.0.1:{closed_port()}/das"),
        CREDENTIALS,
        1,
        "could not be reached",
    ),
    "weights-missing": (
        lambda t: [
            "detect",
            "--model",
            str(t / "model.pt"),
            "--render",
            str(_table(t / "r.parquet", ["a"])),
            "--cutouts",
            "c",
            "--out",
            "d.parquet",
            "--status-out",
            "s.parquet",
            "--device",
            "cpu",
        ],  # fmt: skip
        {},
        1,
        "model.pt (config key model) does not exist",
    ),
    "device-without-cuda": (
        lambda t: ["train", "--render", "r.csv", "--labels", "l.csv", "--out-dir", "t", "--device", "cuda"],
        {"CUDA_VISIBLE_DEVICES": ""},
        None,  # non-zero; distributed._pick_device decides the code
        "cuda",
    ),
}


def _nocol(tmp):
    path = tmp / "nocol.parquet"
    pd.DataFrame({"objid": ["a"], "ra": [1.0]}).to_parquet(path)
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_cli_error_is_one_line_without_traceback(case, tmp_path):
    build, env, status, expected = CASES[case]
    argv = build(tmp_path)
    full_env = {**os.environ, "PYTHONPATH": str(SRC), **env}
    proc = subprocess.run(
        [sys.executable, "-m", "clumpcat", *argv],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "Traceback" not in proc.stderr + proc.stdout
    if status is None:
        assert proc.returncode != 0
    else:
        assert proc.returncode == status, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, proc.stderr
    assert errors[0] == proc.stderr.rstrip("\n").splitlines()[-1]  # the last word is the error
    assert expected in errors[0], errors[0]
    if status is not None:
        assert "this is a bug in clumpcat" not in errors[0]  # a known error, not the catch-all
    if case.startswith("table-"):
        assert not (tmp_path / "shards").exists() or not any((tmp_path / "shards").rglob("*.parquet"))
