"""Manifests: lists of input paths in a file, as the workflow hands them to the stages."""

from __future__ import annotations

import argparse
import os

import pytest

from clumpcat.errors import InputError
from clumpcat.manifests import ManifestPaths, expand_manifests, manifest_digest, read_manifest, write_manifest


def test_round_trip_resolves_relative_paths_against_the_manifest_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for shard in ("00000", "00001"):
        (tmp_path / "results" / "shards" / shard).mkdir(parents=True)
    absolute = tmp_path / "elsewhere.parquet"
    absolute.write_text("x")
    listed = ["results/shards/00000", "results/shards/00001", str(absolute)]
    manifest = tmp_path / "results" / "manifests" / "survey-shards.txt"
    assert write_manifest(manifest, listed)
    # Stored relative to the manifest's folder, so the results folder can move.
    assert manifest.read_text().splitlines() == ["../shards/00000", "../shards/00001", str(absolute)]
    # Read from another folder, the paths still point at the same files.
    monkeypatch.chdir(tmp_path / "results" / "shards")
    paths = read_manifest(tmp_path / "results" / "manifests" / "survey-shards.txt")
    assert [os.path.realpath(p) for p in paths] == [
        os.path.realpath(tmp_path / "results" / "shards" / s) for s in ("00000", "00001")
    ] + [str(absolute)]


def test_unchanged_list_is_not_rewritten(tmp_path):
    manifest = tmp_path / "m.txt"
    assert write_manifest(manifest, ["/a", "/b"])
    os.utime(manifest, (1_000_000_000, 1_000_000_000))
    assert not write_manifest(manifest, ["/a", "/b"])
    assert manifest.stat().st_mtime == 1_000_000_000
    assert write_manifest(manifest, ["/a", "/b", "/c"])
    assert manifest.stat().st_mtime > 1_000_000_000
    assert read_manifest(manifest, must_exist=False) == ["/a", "/b", "/c"]


def test_digest_follows_the_list_and_its_order():
    assert manifest_digest(["a", "b"]) == manifest_digest(["a", "b"])
    assert manifest_digest(["a", "b"]) != manifest_digest(["b", "a"])
    assert manifest_digest(["a", "b"]) != manifest_digest(["a", "b", "c"])
    # No concatenation ambiguity: the separator is part of the digest.
    assert manifest_digest(["ab"]) != manifest_digest(["a", "b"])


def test_comments_and_blank_lines_are_skipped(tmp_path):
    (tmp_path / "t.parquet").write_text("x")
    manifest = tmp_path / "m.txt"
    manifest.write_text("# survey tables\n\nt.parquet\n   \n")
    assert read_manifest(manifest) == [str(tmp_path / "t.parquet")]


def test_missing_paths_are_named_with_their_lines(tmp_path):
    (tmp_path / "a.parquet").write_text("x")
    manifest = tmp_path / "m.txt"
    manifest.write_text("a.parquet\nb.parquet\n# c\nd.parquet\n")
    with pytest.raises(
        InputError, match=r"m\.txt lists 2 path\(s\).*line 2: .*b\.parquet; line 4: .*d\.parquet"
    ):
        read_manifest(manifest)


@pytest.mark.parametrize(
    ("text", "match"),
    [(None, "does not exist"), ("", "lists no path"), ("# only a comment\n", "lists no path")],
)
def test_absent_or_empty_manifest_is_refused(tmp_path, text, match):
    manifest = tmp_path / "m.txt"
    if text is not None:
        manifest.write_text(text)
    with pytest.raises(InputError, match=match):
        read_manifest(manifest)


def test_a_path_with_a_line_break_cannot_be_listed(tmp_path):
    with pytest.raises(InputError, match="line break"):
        write_manifest(tmp_path / "m.txt", ["ok", "bad\nname"])


def test_expand_mixes_paths_and_manifests(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).write_text("x")
    (tmp_path / "m.txt").write_text("a\nb\n")
    assert expand_manifests(["first", f"@{tmp_path / 'm.txt'}", "last"]) == [
        "first",
        str(tmp_path / "a"),
        str(tmp_path / "b"),
        "last",
    ]


def test_cli_option_takes_paths_or_a_manifest(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", nargs="+", default=[], action=ManifestPaths)
    (tmp_path / "s0").mkdir()
    (tmp_path / "m.txt").write_text("s0\n")
    assert parser.parse_args(["--shards", "x", "y"]).shards == ["x", "y"]
    assert parser.parse_args(["--shards", f"@{tmp_path / 'm.txt'}"]).shards == [str(tmp_path / "s0")]
    assert parser.parse_args([]).shards == []
    (tmp_path / "m.txt").write_text("s0\ns1\n")
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--shards", f"@{tmp_path / 'm.txt'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--shards: manifest" in err and "line 2" in err and "Traceback" not in err
