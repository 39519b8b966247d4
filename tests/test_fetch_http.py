"""The polite HTTP client against a real server on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import threading
import time

import pytest

from clumpcat.errors import InputError
from clumpcat.survey.fetch.http import (
    ArchiveRoot,
    CorruptFileError,
    HttpClient,
    NotFoundError,
    RemoteError,
    RetryPolicy,
    TransferError,
    find_credentials,
    redact_url,
)
from tests.servers import ArchiveServer, closed_port

FAST = RetryPolicy(retries=3, backoff_s=0.01, backoff_max_s=0.05, timeout_s=2.0)
PAYLOAD = b"SIMPLE  = T" + bytes(range(256)) * 40


def _check_payload(path):
    data = path.read_bytes()
    if data != PAYLOAD:
        raise TransferError(f"{len(data)} bytes, expected {len(PAYLOAD)}")
    return len(data)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    (root / "a").mkdir(parents=True)
    (root / "a" / "file.bin").write_bytes(PAYLOAD)
    return root


def _leftovers(folder):
    return [p.name for p in folder.rglob(".*part*")]


def test_retries_500_then_succeeds(tree, tmp_path):
    with ArchiveServer(tree) as server, HttpClient(policy=FAST) as client:
        server.add_fault("a/file.bin", ("status", 500), ("status", 503))
        dest = tmp_path / "out" / "file.bin"
        assert client.download(f"{server.url}/a/file.bin", dest, validate=_check_payload) == len(PAYLOAD)
        assert server.counts["/a/file.bin"] == 3
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(tmp_path / "out") == []


def test_retry_after_is_honoured(tree, tmp_path):
    with ArchiveServer(tree) as server, HttpClient(policy=FAST) as client:
        server.add_fault("a/file.bin", ("retry_after", 429, 1))
        client.download(f"{server.url}/a/file.bin", tmp_path / "f.bin")
        first, second = server.times["/a/file.bin"]
    assert second - first >= 0.9


def test_retry_after_is_capped(tree, tmp_path):
    policy = RetryPolicy(retries=1, backoff_s=0.01, timeout_s=2.0, retry_after_max_s=0.2)
    with ArchiveServer(tree) as server, HttpClient(policy=policy) as client:
        server.add_fault("a/file.bin", ("retry_after", 503, 3600))
        start = time.monotonic()
        client.download(f"{server.url}/a/file.bin", tmp_path / "f.bin")
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize("status", [400, 401, 403])
def test_no_retry_on_4xx(tree, tmp_path, status):
    with ArchiveServer(tree) as server, HttpClient(policy=FAST) as client:
        server.add_fault("a/file.bin", ("status", status))
        with pytest.raises(RemoteError, match=f"HTTP {status}") as info:
            client.download(f"{server.url}/a/file.bin", tmp_path / "f.bin")
        assert server.counts["/a/file.bin"] == 1
    assert not info.value.transient


def test_404_is_not_found_without_retry(tree, tmp_path):
    with ArchiveServer(tree) as server, HttpClient(policy=FAST) as client:
        with pytest.raises(NotFoundError, match="not found"):
            client.download(f"{server.url}/a/missing.bin", tmp_path / "f.bin")
        assert server.counts["/a/missing.bin"] == 1


def test_stalled_response_times_out_and_is_retried(tree, tmp_path):
    policy = RetryPolicy(retries=2, backoff_s=0.01, timeout_s=2.0)
    with ArchiveServer(tree) as server, HttpClient(policy=policy) as client:
        server.add_fault("a/file.bin", ("stall", 5.0))
        assert client.download(f"{server.url}/a/file.bin", tmp_path / "f.bin", validate=_check_payload)
        assert server.counts["/a/file.bin"] == 2


@pytest.mark.parametrize("fault", [("cut", 0.5), ("short", 0.5)])
def test_truncated_download_is_fetched_again(tree, tmp_path, fault):
    with ArchiveServer(tree) as server, HttpClient(policy=FAST) as client:
        server.add_fault("a/file.bin", fault)
        dest = tmp_path / "out" / "f.bin"
        client.download(f"{server.url}/a/file.bin", dest, validate=_check_payload)
        assert server.counts["/a/file.bin"] == 2
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(tmp_path / "out") == []


def test_persistent_corruption_is_not_transient_and_leaves_nothing(tree, tmp_path):
    with ArchiveServer(tree) as server, HttpClient(policy=FAST) as client:
        server.add_fault("a/file.bin", *[("short", 0.5)] * 4)
        with pytest.raises(CorruptFileError, match="truncated") as info:
            client.download(f"{server.url}/a/file.bin", tmp_path / "out" / "f.bin", validate=_check_payload)
    assert not info.value.transient
    assert not (tmp_path / "out" / "f.bin").exists()
    assert _leftovers(tmp_path / "out") == []


def test_persistent_5xx_gives_up_naming_the_host(tree, tmp_path):
    with ArchiveServer(tree) as server, HttpClient(policy=FAST) as client:
        server.add_fault("a/file.bin", *[("status", 500)] * 10)
        with pytest.raises(RemoteError, match=r"127\.0\.0\.1:\d+: HTTP 500.*after 4 attempt") as info:
            client.download(f"{server.url}/a/file.bin", tmp_path / "f.bin")
        assert server.counts["/a/file.bin"] == 4
    assert info.value.transient


def test_connection_refused_names_the_host(tmp_path):
    port = closed_port()
    with HttpClient(policy=FAST) as client:
        with pytest.raises(RemoteError, match=f"127.0.0.1:{port}: connection refused") as info:
            client.get_text(f"http://127.0.0.1:{port}/x")
    assert info.value.transient and info.value.host == f"127.0.0.1:{port}"


def test_parallel_requests_are_bounded(tree, tmp_path):
    with ArchiveServer(tree) as server, HttpClient(max_parallel=3, policy=FAST) as client:
        server.add_fault("a/file.bin", *[("delay", 0.15)] * 9)
        threads = [
            threading.Thread(
                target=client.download, args=(f"{server.url}/a/file.bin", tmp_path / f"f{i}.bin")
            )
            for i in range(9)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert server.counts["/a/file.bin"] == 9
        assert 2 <= server.max_inflight <= 3


def test_credentials_from_env_then_netrc(tmp_path, monkeypatch):
    monkeypatch.setenv("T_USER", "alice")
    monkeypatch.setenv("T_PASS", "pw-env")
    assert find_credentials("example.org", "T_USER", "T_PASS", tmp_path / "none").password == "pw-env"
    monkeypatch.delenv("T_PASS")
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("machine example.org login bob password pw-netrc\n")
    netrc_file.chmod(0o600)
    creds = find_credentials("example.org", "T_USER", "T_PASS", netrc_file)
    assert (creds.username, creds.password) == ("bob", "pw-netrc")
    assert "pw-netrc" not in repr(creds)
    with pytest.raises(InputError, match="T_USER and T_PASS") as info:
        find_credentials("other.org", "T_USER", "T_PASS", netrc_file)
    assert "pw-netrc" not in str(info.value)


def test_bad_netrc_error_does_not_quote_the_password(tmp_path, monkeypatch):
    monkeypatch.delenv("T_USER", raising=False)
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text("sekret-xyz machine example.org login bob\n")
    netrc_file.chmod(0o600)
    with pytest.raises(InputError) as info:
        find_credentials("example.org", "T_USER", "T_PASS", netrc_file)
    assert "sekret" not in str(info.value)


def test_policy_and_client_validation():
    with pytest.raises(InputError, match="retries must be >= 0"):
        RetryPolicy(retries=-1)
    with pytest.raises(InputError, match="timeout_s must be > 0"):
        RetryPolicy(timeout_s=0)
    with pytest.raises(InputError, match="--max-parallel must be >= 1"):
        HttpClient(max_parallel=0)
    assert redact_url("https://u:p@host.org:8443/x?y=1") == "https://host.org:8443/x?y=1"


def test_archive_root_mirror_and_cache(tree, tmp_path):
    mirror = ArchiveRoot(tree)
    assert mirror.is_local and mirror.fetch("a/file.bin", _check_payload) == len(PAYLOAD)
    with pytest.raises(NotFoundError, match="not in the mirror"):
        mirror.fetch("a/nope.bin", _check_payload)
    (tree / "a" / "bad.bin").write_bytes(b"junk")
    with pytest.raises(CorruptFileError, match="corrupt"):
        mirror.fetch("a/bad.bin", _check_payload)
    with pytest.raises(InputError, match="no such folder"):
        ArchiveRoot(tmp_path / "absent")
    cache = tmp_path / "cache"
    with ArchiveServer(tree) as server, HttpClient(policy=FAST) as client:
        root = ArchiveRoot(server.url + "/", cache=cache, client=client)
        root.fetch("a/file.bin", _check_payload)
        root.fetch("a/file.bin", _check_payload)
        assert server.counts["/a/file.bin"] == 1  # second call served from the cache
        (cache / "a" / "file.bin").write_bytes(PAYLOAD[:100])  # a corrupt cached copy
        root.fetch("a/file.bin", _check_payload)
        assert server.counts["/a/file.bin"] == 2
