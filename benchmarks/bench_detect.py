"""Detection throughput end to end from cutout files, with and without PNGs.

For each setting prints galaxies per second of:

* ``model``: the model alone on 400-px images already on the device;
* ``cutouts``: ``clumpcat detect --galaxies``: FITS cutouts read by the
  DataLoader workers, rendered (on the device with torch on CUDA, in the
  workers with numpy/Pillow on a CPU: ``--render-on``), model, candidates;
* ``png``: the path before issue 13: ``clumpcat render`` writes PNGs, then
  ``clumpcat detect --render`` decodes them (render and decode both counted,
  and each shown alone).

The cutouts are simulated unless ``--cutouts``/``--galaxies`` are given; the
model is an untrained ``--setup`` unless ``--model`` is given (speed does not
depend on the weights, except through the number of candidates).

    python benchmarks/bench_detect.py --device cpu --images 64
    python benchmarks/bench_detect.py --device cuda --setup cpu-small --batch-size 64 --num-workers 8 \\
        --images 4096 --path cutouts
"""

from __future__ import annotations

import argparse
import itertools
import resource
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from clumpcat.detection.engine import autocast
from clumpcat.detection.inference import RenderedImages, detect_cutouts, detect_images
from clumpcat.detection.model import build_detector
from clumpcat.render.rgb import render_shard
from clumpcat.survey.galaxies import read_galaxies


def _model(args, device):
    if args.model:
        from clumpcat.detection.checkpoint import load_detector

        model, _meta = load_detector(args.model, device=device)
    else:
        model = build_detector(args.setup).to(device)
    model.eval()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def model_only(model, images, batch, device, amp) -> float:
    """Images per second of the model on tensors already on the device."""
    batches = [images[i : i + batch] for i in range(0, len(images), batch)]
    with torch.inference_mode():
        with autocast(device, amp):
            model(batches[0])
        _sync(device)
        start = time.perf_counter()
        for chunk in batches:
            with autocast(device, amp):
                model(chunk)
        _sync(device)
    return len(images) / (time.perf_counter() - start)


def from_cutouts(model, objids, cutouts, survey, batch, device, amp, workers, render_on) -> float:
    """Galaxies per second from FITS cutouts to candidates (no PNG)."""
    start = time.perf_counter()
    _pred, _info, failures = detect_cutouts(
        model, objids, cutouts, survey, device=device, batch_size=batch, num_workers=workers, amp=amp,
        render=render_on,
    )  # fmt: skip
    _sync(device)
    if failures:
        raise SystemExit(f"{len(failures)} cutouts failed, e.g. {failures[0].reason}")
    return len(objids) / (time.perf_counter() - start)


def from_pngs(
    model, objids, cutouts, survey, batch, device, amp, workers, folder
) -> tuple[float, float, float]:
    """Galaxies per second of render (PNG writes), of detect from PNGs, and of both."""
    start = time.perf_counter()
    table, _ = render_shard(objids, cutouts, folder, survey)
    rendered = time.perf_counter()
    detect_images(model, table, device=device, batch_size=batch, num_workers=workers, amp=amp)
    _sync(device)
    done = time.perf_counter()
    n = len(objids)
    return n / (rendered - start), n / (done - rendered), n / (done - start)


def peak_memory(device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB GPU"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB RSS"


def survey_cutouts(args, tmp: Path) -> tuple[list[str], Path]:
    """The galaxies and cutout folder to read, simulated when not given."""
    if args.cutouts:
        objids = read_galaxies(args.galaxies)["objid"].astype(str).tolist()
        folder = Path(args.cutouts)
    else:
        from clumpcat.survey.simulate.survey import simulate_survey

        n = min(args.images, args.distinct)
        galaxies, _truth = simulate_survey(seed=11, first=0, count=n, cutout_dir=tmp / "cutouts")
        objids, folder = galaxies["objid"].astype(str).tolist(), tmp / "cutouts"
    # Repeat the galaxies up to --images (the files stay in the page cache, as
    # in a shard read by a warm node).
    reps = -(-args.images // len(objids))
    return (objids * reps)[: args.images], folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--model", help="trained model.pt (default: an untrained --setup)")
    parser.add_argument("--setup", default="cpu-small")
    parser.add_argument("--galaxies", help="galaxy table of --cutouts (default: simulate)")
    parser.add_argument("--cutouts", help="folder of {objid}.fits (default: simulate)")
    parser.add_argument("--survey", default="synthetic", choices=("synthetic", "sdss", "hsc"))
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[8])
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0])
    parser.add_argument("--amp", choices=("on", "off", "both"), default="on")
    parser.add_argument("--render-on", choices=("auto", "device", "loader"), nargs="+", default=["auto"])
    parser.add_argument("--path", choices=("cutouts", "png", "both"), default="both")
    parser.add_argument("--images", type=int, default=64, help="galaxies per measurement")
    parser.add_argument("--distinct", type=int, default=32, help="distinct simulated galaxies")
    parser.add_argument(
        "--repeats", type=int, default=1, help="measurements per setting; the median is shown"
    )
    args = parser.parse_args()
    if (args.cutouts is None) != (args.galaxies is None):
        parser.error("--cutouts and --galaxies go together")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "bench_detect: --device cuda asked for, but torch sees no CUDA device; use --device cpu"
        )

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    model = _model(args, device)
    amps = (
        {"on": [True], "off": [False], "both": [True, False]}[args.amp] if device.type == "cuda" else [False]
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-detect-") as tmp:
        objids, cutouts = survey_cutouts(args, Path(tmp))
        table, _ = render_shard(sorted(set(objids)), cutouts, Path(tmp) / "rgb0", args.survey)
        data = RenderedImages(table)
        images = [data[i % len(data)][0].to(device) for i in range(min(len(objids), 256))]
        for batch, amp, workers in itertools.product(args.batch_size, amps, args.num_workers):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            alone = model_only(model, images, batch, device, amp)
            base = (str(device), args.model or args.setup, batch, amp, workers)
            rows.append((*base, "model only", alone))
            for render_on in args.render_on if args.path != "png" else []:
                runs = [
                    from_cutouts(model, objids, cutouts, args.survey, batch, device, amp, workers, render_on)
                    for _ in range(args.repeats)
                ]
                rows.append((*base, f"cutouts ({render_on})", pd.Series(runs).median()))
            if args.path != "cutouts":
                runs = [
                    from_pngs(
                        model,
                        objids,
                        cutouts,
                        args.survey,
                        batch,
                        device,
                        amp,
                        workers,
                        Path(tmp) / f"rgb{i}",
                    )
                    for i in range(1, args.repeats + 1)
                ]
                med = pd.DataFrame(runs).median()
                rows.append((*base, "png: render alone", med[0]))
                rows.append((*base, "png: detect alone", med[1]))
                rows.append((*base, "png: render+detect", med[2]))
    print(f"{len(objids)} galaxies per measurement, {args.threads} CPU threads, median of {args.repeats}")
    print(f"{'device':7} {'model':14} {'batch':>5} {'amp':>5} {'workers':>7}  {'path':22} {'galaxies/s':>10}")
    for r in rows:
        print(f"{r[0]:7} {r[1][-14:]:14} {r[2]:>5} {r[3]!s:>5} {r[4]:>7}  {r[5]:22} {r[6]:>10.1f}")
    print(f"peak {peak_memory(device)}")


if __name__ == "__main__":
    main()
