"""Fault suite at survey size: N galaxies, 5% broken cutouts of every kind, nothing lost.

N synthetic galaxies (the tests' small disc + two clumps, 64 x 64 px) are
written as cutouts; a fraction (``--broken``, default 5%) is broken, spread
evenly over every kind of :mod:`tests.faults` (truncated, empty, int16,
infinities, NaN or negative PSF_FWHM, 3x3, 5000x5000 as a sparse file, no
WCS, a band missing, an all-NaN band). The survey then runs as the workflow
runs it, one ``python -m clumpcat`` process per stage and shard: validate,
segment, render, detect (an untrained ``cpu-small`` detector, so that the
stage runs for real; ``--no-detect`` writes the true clump boxes instead),
postprocess, photometry, catalogue.

Printed: per kind, galaxies injected, ``failed`` in the ledger with a stage
and the expected reason, and lost (no ledger row, ``ok`` although broken, or
failed although good: must be 0); per stage, wall time and the peak RSS of
its largest job (the job's own ``VmHWM``), which must be bounded by the
shard, not the survey.

Usage::

    .venv/bin/python benchmarks/bench_faults.py              # N = 1000
    .venv/bin/python benchmarks/bench_faults.py --n 150 --shard-size 50
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.faults and tests.conftest: the suite's own broken files

import pandas as pd  # noqa: E402

from clumpcat.survey.cutouts import write_cutout  # noqa: E402
from tests.conftest import synthetic_cutout  # noqa: E402
from tests.faults import BREAKERS, EXPECTED, SOURCES, true_detections, write_broken  # noqa: E402


def make_survey(folder: Path, n: int, broken: float) -> tuple[Path, dict[str, str]]:
    """Write N cutouts, ``broken`` of them broken; return the galaxy table and objid -> kind."""
    kinds = list(BREAKERS)
    n_broken = max(len(kinds), round(n * broken))
    step = n / n_broken
    broken_at = {int(i * step): kinds[i % len(kinds)] for i in range(n_broken)}
    cutouts = folder / "cutouts"
    truth = {}
    for i in range(n):
        objid = f"g{i:06d}"
        cutout = synthetic_cutout(objid, seed=i, sources=SOURCES)
        kind = broken_at.get(i, "good")
        truth[objid] = kind
        if kind == "good":
            write_cutout(cutouts / f"{objid}.fits", cutout)
        else:
            write_broken(cutouts, kind, cutout)
    table = folder / "galaxies.parquet"
    pd.DataFrame(
        {
            "objid": list(truth),
            "ra": 150.0,
            "dec": 2.0,
            "petro_r90_r": 4.2,
            "redshift": 0.05,
            "ebv": 0.02,
        }
    ).to_parquet(table)
    return table, truth


#: Runs clumpcat's CLI and writes the process's own peak RSS (VmHWM, kB) to $BENCH_RSS_OUT.
#: ``ru_maxrss`` of a child would include its parent's pages at fork time.
_CHILD = """
import os, sys
from clumpcat.cli import main
try:
    code = main(sys.argv[1:])
finally:
    status = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
    open(os.environ["BENCH_RSS_OUT"], "w").write(status)
sys.exit(code)
"""


class Killer:
    """Kills each job once at a random point of its run (SIGTERM or SIGKILL), before it is restarted.

    ``durations`` (stage -> seconds of one job in the clean run) bound the
    random delay, so the kill lands while the job works.
    """

    def __init__(self, seed: int, durations: dict[str, float]):
        self.rng = random.Random(seed)
        self.durations = durations
        self.kills: list[tuple[str, str, float, bool]] = []

    def kill_once(self, stage: str, cmd: list[str], env: dict, handle) -> None:
        delay = self.rng.uniform(0.0, self.durations.get(stage, 5.0))
        sig = self.rng.choice([signal.SIGTERM, signal.SIGKILL])
        proc = subprocess.Popen(cmd, stdout=handle, stderr=handle, env=env)
        try:
            proc.wait(timeout=delay)
            finished = True  # ended before the kill: the restart still runs it again
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
            proc.wait()
            finished = False
        self.kills.append((stage, sig.name, delay, finished))


def run_stage(stage: str, argv: list[str], log: Path, stats: dict, killer: Killer | None = None) -> None:
    """Run one ``clumpcat`` job; record its wall time and peak RSS (MB); with a killer, kill it first."""
    rss_file = log.with_name("rss.txt")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "OMP_NUM_THREADS": "1",
        "BENCH_RSS_OUT": str(rss_file),
    }
    if killer is not None:
        with open(log, "a") as handle:
            killer.kill_once(stage, [sys.executable, "-c", _CHILD, *argv], env, handle)
    start = time.perf_counter()
    with open(log, "a") as handle:
        proc = subprocess.run([sys.executable, "-c", _CHILD, *argv], stdout=handle, stderr=handle, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{stage} exited {proc.returncode}; see {log}")
    stats[stage]["jobs"] += 1
    stats[stage]["wall_s"] += time.perf_counter() - start
    stats[stage]["peak_rss_mb"] = max(stats[stage]["peak_rss_mb"], int(rss_file.read_text()) / 1024)


def make_model(path: Path) -> Path:
    """An untrained cpu-small detector: the detect stage runs for real, quickly."""
    import torch

    from clumpcat.detection.checkpoint import save_detector
    from clumpcat.detection.model import build_detector

    torch.manual_seed(0)
    model = build_detector("cpu-small")
    return save_detector(path, model, model.clumpcat_config)


def run_survey(
    work: Path, out: Path, table: Path, shard_size: int, detect: bool, killer: Killer | None = None
) -> tuple[Path, dict]:
    """Run every stage over the survey in ``work`` with outputs under ``out``; return the ledger and stats."""
    stats: dict = defaultdict(lambda: {"jobs": 0, "wall_s": 0.0, "peak_rss_mb": 0.0})
    out.mkdir(parents=True, exist_ok=True)
    log = out / "bench.log"
    shards_root = out / "shards"
    cutouts = str(work / "cutouts")
    run_stage("validate", ["validate", "--galaxies", str(table), "--shard-size", str(shard_size),
                           "--out-dir", str(shards_root)], log, stats, killer)  # fmt: skip
    model = work / "model.pt"
    if detect and not model.exists():
        make_model(model)
    for shard in sorted(p for p in shards_root.iterdir() if p.is_dir()):
        g = ["--galaxies", str(shard / "galaxies.parquet"), "--cutouts", cutouts]
        seg = ["--segments", str(shard / "segments.npz")]
        run_stage("segment", ["segment", *g, "--out", str(shard / "segments.npz")], log, stats, killer)
        run_stage("render", ["render", *g, "--rgb-dir", str(out / "rgb"), "--survey", "sdss",
                             "--status-out", str(shard / "status-render.parquet"),
                             "--out", str(shard / "render.parquet")], log, stats, killer)  # fmt: skip
        if detect:
            run_stage("detect", ["detect", "--model", str(model), "--render", str(shard / "render.parquet"),
                                 "--cutouts", cutouts, "--status-in", str(shard / "status-render.parquet"),
                                 "--status-out", str(shard / "status-detect.parquet"),
                                 "--out", str(shard / "detections.parquet"), "--threads", "1",
                                 "--device", "cpu"], log, stats, killer)  # fmt: skip
        else:
            status = pd.read_parquet(shard / "status-render.parquet")
            status.to_parquet(shard / "status-detect.parquet")
            ok = status.loc[status["status"] == "ok", "objid"].tolist()
            true_detections(ok).to_parquet(shard / "detections.parquet")
        run_stage("postprocess", ["postprocess", *g, *seg, "--detections", str(shard / "detections.parquet"),
                                  "--status-in", str(shard / "status-detect.parquet"),
                                  "--status-out", str(shard / "status-postprocess.parquet"),
                                  "--out", str(shard / "clumps.parquet")], log, stats, killer)  # fmt: skip
        run_stage("photometry", ["photometry", *g, *seg, "--clumps", str(shard / "clumps.parquet"),
                                 "--status-in", str(shard / "status-postprocess.parquet"),
                                 "--status-out", str(shard / "status-photometry.parquet"),
                                 "--out", str(shard / "photometry.parquet"), "--ebv-source", "table",
                                 "--bands", "u", "g", "r", "i", "z"], log, stats, killer)  # fmt: skip
    results = out / "results"
    run_stage("catalogue", ["catalogue", "--shards-dir", str(shards_root), "--out-dir", str(results),
                            "--galaxies", str(table), "--no-fits"], log, stats, killer)  # fmt: skip
    return results / "ledger.parquet", stats


def tally(ledger_path: Path, truth: dict[str, str]) -> pd.DataFrame:
    ledger = pd.read_parquet(ledger_path).set_index("objid")
    rows = []
    for kind in ["good", *BREAKERS]:
        ids = [o for o, k in truth.items() if k == kind]
        if not ids:
            continue
        present = ledger.reindex(ids)
        missing = int(present["status"].isna().sum())
        if kind == "good":
            failed_ok = 0
            lost = missing + int((present["status"] == "failed").sum())
        else:
            failed = (present["status"] == "failed") & (present["stage"].fillna("") != "")
            expected = present["reason"].fillna("").str.contains(EXPECTED[kind], regex=False)
            failed_ok = int((failed & expected).sum())
            lost = len(ids) - failed_ok
        rows.append({"kind": kind, "injected": len(ids), "failed_with_reason": failed_ok, "lost": lost})
    extra = sorted(set(ledger.index) - set(truth))
    if extra:
        rows.append({"kind": "unknown rows", "injected": 0, "failed_with_reason": 0, "lost": len(extra)})
    return pd.DataFrame(rows)


def checksums(results: Path) -> dict[str, str]:
    """SHA-256 of the results folder's tables (the release's contents)."""
    names = ("catalogue.parquet", "clumps.parquet", "ledger.parquet")
    return {
        n: hashlib.sha256((results / n).read_bytes()).hexdigest() for n in names if (results / n).exists()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="galaxies (default 1000)")
    parser.add_argument(
        "--broken", type=float, default=0.05, help="fraction of broken cutouts (default 0.05)"
    )
    parser.add_argument("--shard-size", type=int, default=100, help="galaxies per shard (default 100)")
    parser.add_argument(
        "--no-detect", action="store_true", help="write the true boxes instead of running detect"
    )
    parser.add_argument(
        "--kill", action="store_true", help="run again, each job killed once at a random point and restarted"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    parser.add_argument("--workdir", help="keep the run here (default: a temporary folder)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        table, truth = make_survey(work, args.n, args.broken)
        t_make = time.perf_counter() - t0
        ledger, stats = run_survey(work, work / "clean", table, args.shard_size, detect=not args.no_detect)
        result = tally(ledger, truth)
        killer = None
        if args.kill:
            per_job = {k: v["wall_s"] / v["jobs"] for k, v in stats.items()}
            killer = Killer(args.seed, per_job)
            run_survey(work, work / "killed", table, args.shard_size, not args.no_detect, killer)
            clean_sums, killed_sums = (
                checksums(work / "clean" / "results"),
                checksums(work / "killed" / "results"),
            )

    n_broken = sum(k != "good" for k in truth.values())
    print(f"\n{args.n} galaxies, {n_broken} broken ({n_broken / args.n:.1%}), shards of {args.shard_size}; "
          f"cutouts written in {t_make:.1f} s")  # fmt: skip
    print(result.to_string(index=False))
    print("\nstage        jobs  wall_s  peak_rss_mb (largest job)")
    for stage, s in stats.items():
        print(f"{stage:<12} {s['jobs']:>4} {s['wall_s']:>7.1f} {s['peak_rss_mb']:>12.0f}")
    lost = int(result["lost"].sum())
    print(f"\nlost: {lost}")
    same = True
    if killer is not None:
        n_killed = sum(not k[3] for k in killer.kills)
        n_sigkill = sum(k[1] == "SIGKILL" and not k[3] for k in killer.kills)
        print(
            f"\nkill and restart: {len(killer.kills)} jobs, {n_killed} killed mid-run ({n_sigkill} by SIGKILL)"
        )
        for name, digest in clean_sums.items():
            equal = killed_sums.get(name) == digest
            same &= equal
            print(f"  {name:<18} {digest[:16]}  {'equal' if equal else 'DIFFERENT'}")
    return 1 if lost or not same else 0


if __name__ == "__main__":
    sys.exit(main())
