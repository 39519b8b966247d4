"""The workflow at survey scale: no job's command grows with the number of shards.

Linux caps one argument at 128 KiB (`bash -c CMD` takes the whole command as
one), so the aggregating rules read manifests (clumpcat.manifests) instead of
lists on their command lines (DESIGN.md, "Package layout and settings").
"""

from __future__ import annotations

import os
import re

import pytest
import yaml

from clumpcat.manifests import read_manifest
from tests.test_workflow import snakemake

pytestmark = pytest.mark.xdist_group("workflow")

#: The limit of issue 13: well under Linux's 128 KiB per argument.
MAX_COMMAND_BYTES = 32 * 1024
#: What the workflow's shell.prefix adds to every printed command (common.smk).
PREFIX_ALLOWANCE = 512
SHARD = re.compile(r"/shards/(\d{5})/")


def shell_commands(stdout: str) -> dict[str, list[str]]:
    """rule -> the shell commands `snakemake -n -p` printed for its jobs."""
    commands: dict[str, list[str]] = {}
    rule = None
    for line in stdout.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.startswith("Shell command: ") and rule:
            commands.setdefault(rule, []).append(line.removeprefix("Shell command: "))
    return commands


def survey_config(tmp_path, n_galaxies: int, shard_size: int) -> str:
    """A synthetic survey with its own training survey, evaluated with injections."""
    config = {
        "results": str(tmp_path / "results"),
        "shard_size": shard_size,
        "simulate": {"n_galaxies": n_galaxies},
        "training": {"n_galaxies": n_galaxies},
        "evaluate": {"enabled": True, "baseline": True, "injection": True},
    }
    path = tmp_path / f"survey-{n_galaxies}-{shard_size}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.slow
def test_ten_million_galaxies_have_no_long_command(tmp_path):
    # 10^7 galaxies in 100 shards per sample (survey, injected, training): the
    # default shard_size (500) would make 2x10^4 shards per sample, a DAG of
    # ~400,000 jobs that takes far longer than this test may (benchmarks/bench_dag.py
    # times larger DAGs). Commands must not depend on the shard count: checked
    # below by the shards each command names, not only by its length.
    n_galaxies, shard_size = 10_000_000, 100_000
    done = snakemake(
        "-n",
        "-p",
        "--quiet",
        "reason",
        "host",
        "--configfile",
        survey_config(tmp_path, n_galaxies, shard_size),
        "--",
        "all",
        "experiment",
        "zoobot_clumps",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    commands = shell_commands(done.stdout)
    n_shards = n_galaxies // shard_size
    for rule in ("simulate", "render", "detect", "postprocess", "photometry"):
        assert len(commands[rule]) >= n_shards, rule
    aggregating = (
        "catalogue",
        "evaluate",
        "plots",
        "train",
        "train_experiment",
        "train_classifier",
        "merge_galaxies",
    )
    assert all(rule in commands for rule in (*aggregating, "experiment"))
    longest = max((cmd for cmds in commands.values() for cmd in cmds), key=len)
    assert len(longest.encode()) + PREFIX_ALLOWANCE <= MAX_COMMAND_BYTES, longest[:300]
    for rule, cmds in commands.items():
        for cmd in cmds:
            assert len(set(SHARD.findall(cmd))) <= 1, (
                f"rule {rule} lists shards on its command line: {cmd[:300]}"
            )
    # The aggregating rules read their lists from manifests.
    for rule in aggregating:
        assert " @" in commands[rule][0], f"rule {rule} reads no manifest: {commands[rule][0][:300]}"


@pytest.mark.slow
def test_manifests_are_written_once_per_list(tmp_path):
    """A manifest is a rule's output named by its list's digest: unchanged lists are
    not rewritten (nothing reruns), a changed list is a new file."""

    def catalogue_manifest(n_galaxies):
        done = snakemake(
            "-n", "-p", "--configfile", survey_config(tmp_path, n_galaxies, 10), "--", "catalogue"
        )
        assert done.returncode == 0, done.stderr[-3000:]
        (command,) = shell_commands(done.stdout)["catalogue"]
        return re.search(r"--shards @(\S+)", command).group(1)

    manifest = catalogue_manifest(30)
    assert manifest != catalogue_manifest(40)
    config = survey_config(tmp_path, 30, 10)
    done = snakemake("--configfile", config, "--", manifest)
    assert done.returncode == 0, done.stderr[-3000:]
    results = tmp_path / "results"
    assert read_manifest(manifest, must_exist=False) == [
        str(results / "survey/shards" / s) for s in ("00000", "00001", "00002")
    ]
    mtime = os.stat(manifest).st_mtime_ns
    done = snakemake("--configfile", config, "--", manifest)
    assert done.returncode == 0 and "Nothing to be done" in done.stdout + done.stderr
    assert os.stat(manifest).st_mtime_ns == mtime
