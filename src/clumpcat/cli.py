"""The ``clumpcat`` command: one subcommand per pipeline stage.

Each stage module defines ``configure_parser(parser)`` and ``run(args) -> int``.
Modules are imported only when their subcommand runs, so ``clumpcat render``
never pays for importing torch.

A run that fails prints one line to stderr saying what went wrong and what to
do, and exits non-zero; the traceback of an unexpected error goes only to the
``--log`` file (and to stderr with ``-v``), so a user never has to read one.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from clumpcat import __version__
from clumpcat.errors import ClumpcatError, one_line
from clumpcat.logs import setup_logging

__all__ = ["SUBCOMMANDS", "main"]

#: subcommand -> (module, one-line help). Order is the pipeline's order.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("clumpcat.survey.validate", "check a galaxy table and split it into shards"),
    "simulate": ("clumpcat.survey.simulate", "make a synthetic SDSS-like survey with truth"),
    "segment": ("clumpcat.survey.segments", "each galaxy's host segment (r band, 4.3.2), stored per shard"),
    "inject": ("clumpcat.survey.inject", "inject synthetic clumps into existing cutouts"),
    "fetch": ("clumpcat.survey.fetch.cli", "download SDSS or HSC cutouts"),
    "crossmatch": ("clumpcat.survey.crossmatch", "match a new HSC table against processed galaxies"),
    "render": ("clumpcat.render.rgb", "render cutouts as 400x400 RGB PNGs with label boxes"),
    "weights": ("clumpcat.detection.weights", "fetch or locate backbone and detector weights"),
    "train-classifier": (
        "clumpcat.detection.classifier_training",
        "train the clumpy / not-clumpy classifier whose encoder is the Zoobot Clumps backbone (App. B)",
    ),
    "train": ("clumpcat.detection.training", "train a Faster R-CNN clump detector"),
    "detect": ("clumpcat.detection.inference", "run a trained detector over rendered images"),
    "postprocess": ("clumpcat.postprocess.clumps", "NMS, merge within the PSF FWHM, host mask"),
    "photometry": ("clumpcat.photometry.apertures", "ugriz aperture photometry of clumps"),
    "catalogue": ("clumpcat.catalogue.writer", "merge shards into the released catalogue"),
    "baseline": ("clumpcat.evaluation.baseline", "classical peak-finder detections, for comparison"),
    "evaluate": ("clumpcat.evaluation.evaluate", "completeness, purity and COCO metrics against truth"),
    "plots": ("clumpcat.evaluation.plots", "figures for the report"),
    "experiment": ("clumpcat.detection.experiment", "compare set-ups over training-set sizes (App. C)"),
    "merge": ("clumpcat.catalogue.merge", "concatenate per-shard tables, streaming"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """Build the parser; only the chosen subcommand's module is imported."""
    parser = argparse.ArgumentParser(
        prog="clumpcat",
        description="Find giant star-forming clumps in galaxy images and catalogue them.",
    )
    parser.add_argument("--version", action="version", version=f"clumpcat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="STAGE")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--log", metavar="FILE", help="also append log records to FILE")
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        if name == chosen:
            importlib.import_module(module).configure_parser(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``clumpcat`` console script.

    Returns
    -------
    int
        0 on success; 1 for an error of the input, configuration or
        environment (one line on stderr); 2 for a usage error; 70 for an
        unexpected error (a bug: one line, the traceback in the log file);
        130 when interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(argv)
    except ImportError as exc:
        print(f"clumpcat: error: {one_line(exc)}; install clumpcat with its dependencies", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    setup_logging(args.log, args.verbose)
    log = logging.getLogger("clumpcat")
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except ClumpcatError as exc:
        log.error("%s", one_line(exc))
        _traceback_to_files(log, args.verbose)
        return 1
    except KeyboardInterrupt:
        log.error(
            "%s: interrupted; run the same command again to finish (finished work is kept)", args.command
        )
        return 130
    except MemoryError:
        log.error(
            "%s: out of memory; use smaller shards (shard_size) or a machine with more memory", args.command
        )
        _traceback_to_files(log, args.verbose)
        return 1
    except OSError as exc:
        # Files the user named (missing, unreadable, disk full): not a bug.
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        what = exc.strerror or one_line(exc)
        log.error(
            "%s: %s%s; check the path, its permissions and the free disk space", args.command, where, what
        )
        _traceback_to_files(log, args.verbose)
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        log.error(
            "%s: unexpected %s: %s; this is a bug in clumpcat: rerun with -v (or see --log) for the "
            "traceback and report it",
            args.command,
            type(exc).__name__,
            one_line(exc),
        )
        _traceback_to_files(log, args.verbose)
        return 70


def _traceback_to_files(log: logging.Logger, verbose: bool) -> None:
    """Write the current exception's traceback to the log file(s); to stderr too with ``-v``."""
    text = traceback.format_exc()
    for handler in log.handlers:
        is_file = isinstance(handler, logging.FileHandler)
        if is_file or verbose:
            handler.acquire()
            try:
                handler.stream.write(text)
                handler.flush()
            finally:
                handler.release()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
