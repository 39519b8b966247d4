"""``clumpcat fetch sdss|hsc``: cutouts of one shard from the survey archives.

Examples
--------
SDSS from the public SAS (frames cached once, however many shards use them)::

    clumpcat fetch sdss --galaxies shards/0/galaxies.parquet \\
        --status-out shards/0/status-fetch.parquet --cutouts results/cutouts \\
        --cache ~/.cache/clumpcat/sas --sas-root https://data.sdss.org/sas

SDSS from a local mirror with the SAS layout::

    clumpcat fetch sdss ... --sas-root /data/sdss/sas

HSC PDR3 (credentials in HSC_SSP_CAS_USERNAME / HSC_SSP_CAS_PASSWORD or ~/.netrc)::

    clumpcat fetch hsc --galaxies G.parquet --status-out S.parquet --cutouts C --cache CACHE

Exit status: 0 when the status table is written (failed galaxies are in it
with their reason); 1 when a host could not be reached and
``--on-network-error fail`` (the default): the message names the host and the
galaxies left undone, no status table is written, and a rerun fetches only
what is still missing.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from clumpcat.constants import HSC_MASK_PLANES
from clumpcat.errors import InputError, NetworkError
from clumpcat.ledger import pending, read_status, write_status
from clumpcat.survey.fetch.common import INFO_COLUMNS, FetchResult
from clumpcat.survey.fetch.http import (
    ArchiveRoot,
    HttpClient,
    RetryPolicy,
    find_credentials,
    host_of,
    redact_url,
)
from clumpcat.survey.galaxies import read_galaxies
from clumpcat.tables import write_table

__all__ = ["configure_parser", "run", "run_sdss", "run_hsc"]

log = logging.getLogger(__name__)


def _none_or(text: str | None) -> str | None:
    return None if text is None or text.strip().lower() in ("", "none", "off") else text


def _common(p: argparse.ArgumentParser) -> None:
    # Also accepted after the survey name (``clumpcat fetch sdss ... --log FILE``);
    # SUPPRESS keeps the value given before it when absent here.
    p.add_argument("--log", metavar="FILE", default=argparse.SUPPRESS, help="also append log records to FILE")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    p.add_argument(
        "--galaxies", required=True, metavar="TABLE", help="galaxy table of the shard (Parquet or CSV)"
    )
    p.add_argument(
        "--status-out", required=True, metavar="PARQUET", help="status table to write (status-fetch.parquet)"
    )
    p.add_argument("--cutouts", required=True, metavar="DIR", help="folder receiving {objid}.fits")
    p.add_argument("--cache", metavar="DIR", help="download cache (required for a URL archive)")
    p.add_argument(
        "--status-in",
        metavar="PARQUET",
        help="previous stage's status table; only its ok galaxies are fetched",
    )
    p.add_argument(
        "--info", metavar="PARQUET", help="also write per-galaxy fetch information (source frames, edge flag)"
    )
    p.add_argument("--max-parallel", type=int, default=4, help="requests in flight at once (default 4)")
    p.add_argument(
        "--retries", type=int, default=5, help="retries per request on timeouts, 429 and 5xx (default 5)"
    )
    p.add_argument(
        "--timeout-s", type=float, default=60.0, help="connect/read timeout in seconds (default 60)"
    )
    p.add_argument(
        "--backoff-s", type=float, default=1.0, help="first retry delay, doubled each retry (default 1)"
    )
    p.add_argument("--backoff-max-s", type=float, default=60.0, help="longest retry delay (default 60)")
    p.add_argument(
        "--on-network-error",
        choices=("fail", "record"),
        default="fail",
        help="when a host stays unreachable: 'fail' exits 1 without a status table (rerun later), "
        "'record' writes the galaxies as failed with the reason (default fail)",
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``sdss`` and ``hsc`` sub-subcommands."""
    sub = parser.add_subparsers(dest="survey", metavar="SURVEY", required=True)
    from clumpcat.survey.fetch.hsc import DAS_CUTOUT_URL, DAS_PSF_URL
    from clumpcat.survey.fetch.sdss import SAS_URL, SKYSERVER_SQL_URL

    sdss = sub.add_parser(
        "sdss", help="SDSS ugriz cutouts from SAS frames", description="SDSS ugriz cutouts from SAS frames"
    )
    _common(sdss)
    sdss.add_argument(
        "--sas-root", default=SAS_URL, help=f"SAS URL or local mirror folder (default {SAS_URL})"
    )
    sdss.add_argument(
        "--skyserver-url",
        default=SKYSERVER_SQL_URL,
        help="SkyServer SqlSearch endpoint for galaxies without run/camcol/field ('none' to disable)",
    )
    sdss.add_argument(
        "--no-psfield",
        action="store_true",
        help="never fetch psField files: no PSF_<BAND> HDUs, psf_fwhm_{u,g,r,i,z} from the galaxy table",
    )
    sdss.add_argument(
        "--max-outside",
        type=float,
        default=0.5,
        help="largest fraction of a cutout outside its frame (NaN-padded, flagged); beyond it the galaxy fails",
    )
    hsc = sub.add_parser(
        "hsc",
        help="HSC-SSP PDR3 grizy cutouts from the DAS",
        description="HSC-SSP PDR3 grizy cutouts from the DAS",
    )
    _common(hsc)
    hsc.add_argument(
        "--das-url", default=DAS_CUTOUT_URL, help=f"DAS cutout endpoint (default {DAS_CUTOUT_URL})"
    )
    hsc.add_argument(
        "--psf-url", default=DAS_PSF_URL, help="DAS PSF picker endpoint ('none': use psf_fwhm_* only)"
    )
    hsc.add_argument(
        "--rerun", default="pdr3_wide", help="PDR3 rerun: pdr3_wide or pdr3_dud (default pdr3_wide)"
    )
    hsc.add_argument(
        "--username-env", default="HSC_SSP_CAS_USERNAME", help="environment variable with the user name"
    )
    hsc.add_argument(
        "--password-env", default="HSC_SSP_CAS_PASSWORD", help="environment variable with the password"
    )
    hsc.add_argument("--netrc", metavar="FILE", help="netrc file (default $NETRC or ~/.netrc)")
    hsc.add_argument(
        "--mask-planes",
        nargs="*",
        default=list(HSC_MASK_PLANES),
        metavar="PLANE",
        help=f"HSC mask planes whose pixels become NaN with IVAR 0 (default {' '.join(HSC_MASK_PLANES)})",
    )


def _policy(args) -> RetryPolicy:
    return RetryPolicy(
        retries=args.retries,
        backoff_s=args.backoff_s,
        backoff_max_s=args.backoff_max_s,
        timeout_s=args.timeout_s,
    )


def _shard(args):
    galaxies = read_galaxies(args.galaxies)
    objids = galaxies["objid"].tolist()
    upstream = read_status(args.status_in)
    galaxies = galaxies[galaxies["objid"].isin(pending(objids, upstream))]
    return objids, galaxies, upstream


def _finish(args, objids, upstream, result: FetchResult) -> int:
    if result.n_undone:
        message = result.undone_message()
        if args.on_network_error == "fail":
            raise NetworkError(
                f"{message}. No status table written to {args.status_out}; cutouts fetched so far are kept, "
                "and a rerun fetches only the missing ones"
            )
        log.error("%s; recorded as failed in %s", message, args.status_out)
    entries = result.ledger_entries(record_undone=True)
    write_status(args.status_out, objids, entries, upstream=upstream)
    if args.info:
        write_table(result.info_frame(), args.info, INFO_COLUMNS)
    n_fail = len(entries)
    log.info(
        "%d of %d galaxies have cutouts; %d failed (reasons in %s)",
        len(objids) - n_fail,
        len(objids),
        n_fail,
        args.status_out,
    )
    return 0


def run_sdss(args) -> int:
    """Run ``clumpcat fetch sdss``."""
    from clumpcat.survey.fetch.sdss import fetch_sdss

    objids, galaxies, upstream = _shard(args)
    with HttpClient(max_parallel=args.max_parallel, policy=_policy(args)) as client:
        is_url = str(args.sas_root).lower().startswith(("http://", "https://"))
        if is_url and not args.cache:
            raise InputError(
                "--cache is required when --sas-root is a URL (frames are downloaded there once)"
            )
        root = ArchiveRoot(args.sas_root, cache=args.cache, client=client)
        log.info("SDSS frames from %s", redact_url(str(args.sas_root)))
        result = fetch_sdss(
            galaxies,
            args.cutouts,
            root,
            client=client,
            skyserver_url=_none_or(args.skyserver_url),
            use_psfield=not args.no_psfield,
            max_outside=args.max_outside,
            max_parallel=args.max_parallel,
        )
    return _finish(args, objids, upstream, result)


def run_hsc(args) -> int:
    """Run ``clumpcat fetch hsc``."""
    from clumpcat.survey.fetch.hsc import fetch_hsc

    if not args.cache:
        raise InputError(
            "--cache is required for HSC (per-band downloads land there before the cutout is built)"
        )
    objids, galaxies, upstream = _shard(args)
    host = (host_of(args.das_url) or "").split(":")[0]
    creds = find_credentials(host, args.username_env, args.password_env, args.netrc)
    with HttpClient(max_parallel=args.max_parallel, policy=_policy(args), auth=creds) as client:
        result = fetch_hsc(
            galaxies,
            args.cutouts,
            client,
            args.cache,
            das_url=args.das_url,
            psf_url=_none_or(args.psf_url),
            rerun=args.rerun,
            max_parallel=args.max_parallel,
            mask_planes=tuple(p.upper().removeprefix("MP_") for p in args.mask_planes),
        )
    return _finish(args, objids, upstream, result)


def run(args) -> int:
    """Entry point of ``clumpcat fetch``."""
    Path(args.cutouts).mkdir(parents=True, exist_ok=True)
    if args.survey == "sdss":
        return run_sdss(args)
    if args.survey == "hsc":
        return run_hsc(args)
    raise InputError(f"'survey' must be 'sdss' or 'hsc', got {args.survey!r}")
