"""Security: model files are never unpickled; credentials never reach a file or a message.

A model file that is a malicious pickle (its ``__reduce__`` would create a
marker file) must be refused with clumpcat's error before anything runs. An
HSC fetch with a password, against servers on 127.0.0.1 that fail in every way
the client meets, must leave the password in no output file, log, status
reason or exception text.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clumpcat.errors import InputError
from tests.servers import ArchiveServer, closed_port
from tests.test_fetch_hsc import DAS_PATH, GALAXIES, PASSWORD, PSF_PATH, USER, _das, _psf

SRC = Path(__file__).resolve().parents[1] / "src"


class _Payload:
    """Pickles into a call of ``open(marker, "w")``: unpickling it creates the marker."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _malicious_files(tmp_path: Path) -> dict[str, Path]:
    """The same payload as a torch zip checkpoint, a legacy torch file and a bare pickle."""
    marker = tmp_path / "PWNED"
    files = {}
    payload = {"model": _Payload(marker), "config": {"setup": "cpu-small"}}
    files["torch-zip"] = tmp_path / "zip.pt"
    torch.save(payload, files["torch-zip"])
    files["torch-legacy"] = tmp_path / "legacy.pth"
    torch.save(payload, files["torch-legacy"], _use_new_zipfile_serialization=False)
    files["bare-pickle"] = tmp_path / "bare.pt"
    files["bare-pickle"].write_bytes(pickle.dumps(payload))
    assert not marker.exists()
    return files


def _loaders():
    from clumpcat.detection.checkpoint import load_detector, load_paper_detector
    from clumpcat.detection.classifier import load_classifier
    from clumpcat.detection.weights import read_state_dict

    return {
        "load_detector": load_detector,
        "load_paper_detector": load_paper_detector,
        "load_classifier": load_classifier,
        "read_state_dict": read_state_dict,
    }


@pytest.mark.parametrize(
    "loader", ["load_detector", "load_paper_detector", "load_classifier", "read_state_dict"]
)
def test_malicious_pickle_is_refused_without_running(tmp_path, loader):
    load = _loaders()[loader]
    for kind, path in _malicious_files(tmp_path).items():
        with pytest.raises(InputError) as info:
            load(path)
        assert not (tmp_path / "PWNED").exists(), f"{loader} ran the payload of a {kind} file"
        assert str(path) in str(info.value)
        if loader != "load_classifier":  # the package's own loaders say it in one line
            assert "refused" in str(info.value) and "\n" not in str(info.value)


def test_malicious_model_from_the_cli_is_one_line_and_runs_nothing(tmp_path):
    path = _malicious_files(tmp_path)["torch-zip"]
    render = tmp_path / "render.parquet"
    import pandas as pd

    pd.DataFrame({"objid": ["g0"], "png": [str(tmp_path / "g0.png")]}).to_parquet(render)
    argv = ["detect", "--model", str(path), "--render", str(render), "--cutouts", str(tmp_path)]
    argv += ["--out", str(tmp_path / "d.parquet"), "--status-out", str(tmp_path / "s.parquet")]
    proc = _clumpcat(argv, tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "refused" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "PWNED").exists()


def test_no_reader_in_the_package_can_unpickle():
    """Every torch.load passes weights_only=True; no np.load allows pickles; no pickle module reads."""
    offenders = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for call in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in call.group(1):
                offenders.append(f"{path.name}: {call.group(0)}")
        for bad in (
            "allow_pickle=True",
            "pickle.load",
            "pd.read_pickle",
            "joblib.load",
            "yaml.load(",
            "dill",
        ):
            if bad in text:
                offenders.append(f"{path.name}: {bad}")
    assert not offenders


# ---------------------------------------------------------------- credentials


def _clumpcat(argv, cwd, env=None):
    full = {**os.environ, "PYTHONPATH": str(SRC), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "clumpcat", *argv],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _secrets():
    from urllib.parse import quote

    return {PASSWORD, quote(PASSWORD, safe=""), quote(PASSWORD)}


def test_password_never_reaches_files_logs_or_messages(tmp_path, caplog):
    """Fetch HSC through failing servers, a closed port and a URL with user:password@; grep everything."""
    import logging

    from clumpcat.survey.fetch.hsc import fetch_hsc
    from clumpcat.survey.fetch.http import Credentials, HttpClient, RetryPolicy

    gal = tmp_path / "galaxies.parquet"
    GALAXIES.iloc[:3].to_parquet(gal)
    env = {"HSC_SSP_CAS_USERNAME": USER, "HSC_SSP_CAS_PASSWORD": PASSWORD}
    texts = []
    server = ArchiveServer(
        endpoints={DAS_PATH: _das, PSF_PATH: _psf}, auth=(USER, PASSWORD), auth_paths=("/das", "/psf")
    )
    with server:
        # From the CLI, debug logging on: stderr, the log file, status and info tables.
        server.add_fault(DAS_PATH, ("status", 500), ("cut", 0.3), ("short", 0.4), ("status", 401))
        argv = ["fetch", "hsc", "--galaxies", str(gal), "--status-out", str(tmp_path / "status.parquet")]
        argv += ["--cutouts", str(tmp_path / "c"), "--cache", str(tmp_path / "cache")]
        argv += ["--das-url", server.url + DAS_PATH, "--psf-url", server.url + PSF_PATH]
        argv += ["--retries", "2", "--backoff-s", "0.01", "--info", str(tmp_path / "info.parquet")]
        proc = _clumpcat([*argv, "--log", str(tmp_path / "fetch.log"), "-v"], tmp_path, env)
        assert proc.returncode in (0, 1), proc.stderr  # 1: a galaxy left undone after its retries
        texts += [proc.stdout, proc.stderr]
        assert server.auth_headers  # the password was sent, so it was there to leak
        host = server.url.removeprefix("http://")
        # In process: a URL carrying user:password@, a closed port; results, exceptions, log records.
        dead = f"127.0.0.1:{closed_port()}"
        policy = RetryPolicy(retries=1, backoff_s=0.01, backoff_max_s=0.02, timeout_s=1.0)
        caplog.set_level(logging.DEBUG, logger="clumpcat")
        for where in (host, dead):
            base = f"http://{USER}:{PASSWORD}@{where}"
            with HttpClient(policy=policy, auth=Credentials(USER, PASSWORD)) as client:
                try:
                    result = fetch_hsc(
                        GALAXIES.iloc[:2],
                        tmp_path / "c2",
                        client,
                        tmp_path / "cache2",
                        das_url=base + DAS_PATH,
                        psf_url=base + PSF_PATH,
                    )
                    texts += [repr(result.failures), repr(result.undone_reasons), repr(result.info)]
                except Exception as exc:  # noqa: BLE001 - its text is what is checked
                    texts.append(f"{exc!s} {exc!r} {exc.args!r}")
                with pytest.raises(Exception) as info:
                    client.get_text(base + "/nothing-here")
                texts.append(f"{info.value!s} {info.value!r} {info.value.args!r}")
        texts.append(caplog.text)

    found = [t for t in texts if any(s in t for s in _secrets())]
    assert not found, found[0][:500]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"status.parquet", "info.parquet", "fetch.log", "h1.fits"}
    for path in files:
        data = path.read_bytes()
        assert not any(s.encode() in data for s in _secrets()), path


# ---------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "objid", ["../x", "/etc/passwd", "a/b", "a\\b", "a\x00b", "..", ".", "", "x" * 129, ".hidden", "a b"]
)
def test_no_objid_names_a_path_outside_its_folder(tmp_path, objid):
    from clumpcat.paths import objid_path

    with pytest.raises(InputError, match="objid"):
        objid_path(tmp_path, objid, ".fits")


@pytest.mark.parametrize("suffix", ["/../x.fits", "-r/..", "\x00.fits"])
def test_no_suffix_climbs_out(tmp_path, suffix):
    from clumpcat.paths import objid_path

    with pytest.raises(InputError, match="separator"):
        objid_path(tmp_path, "g1", suffix)
    assert objid_path(tmp_path, "g1", "-r.psf.fits") == tmp_path / "g1-r.psf.fits"


def test_config_and_table_values_cannot_leave_the_cache(tmp_path):
    from clumpcat.survey.fetch.hsc import fetch_hsc
    from clumpcat.survey.fetch.http import ArchiveRoot

    with pytest.raises(InputError, match="hsc.rerun"):
        fetch_hsc(GALAXIES.iloc[:1], tmp_path / "c", None, tmp_path / "cache", das_url="http://127.0.0.1:9/x",
                  rerun="../../outside")  # fmt: skip
    (tmp_path / "mirror").mkdir()
    root = ArchiveRoot(tmp_path / "mirror")
    for relpath in ("../secret.fits", "/etc/passwd", "a/../../b"):
        with pytest.raises(InputError, match="would leave"):
            root.fetch(relpath, lambda p: p.read_bytes())
    assert not (tmp_path / "outside").exists()
