# Survey access: SDSS frames from the SAS (or a local mirror) and HSC PDR3 cutouts
# from the DAS, one job per shard, plus the `crossmatch` target for reruns over
# a new HSC object table. Each job writes the shard's status table; cutouts go to
# the survey's cutout folder, frames to a cache shared by every shard.
# Config keys: fetch/{sas_root,cache,max_parallel,retries,timeout_s,backoff_s,
# skyserver_url,max_outside,on_network_error}, hsc/{das_url,psf_url,rerun,
# username_env,password_env,mask_planes}, crossmatch/{hsc_objects,galaxies,radius_arcsec,
# processed,out}.


FETCH_CACHE = lookup(dpath="fetch/cache", within=config, default=None) or f"{RESULTS}/cache"
FETCH_COMMON = " ".join(
    [
        f"--max-parallel {lookup(dpath='fetch/max_parallel', within=config, default=4)}",
        f"--retries {lookup(dpath='fetch/retries', within=config, default=5)}",
        f"--timeout-s {lookup(dpath='fetch/timeout_s', within=config, default=60)}",
        f"--backoff-s {lookup(dpath='fetch/backoff_s', within=config, default=1.0)}",
        f"--on-network-error {lookup(dpath='fetch/on_network_error', within=config, default='fail')}",
    ]
)
FETCH = not SYNTHETIC and not config["cutouts"]


if FETCH and SURVEY == "sdss":

    rule fetch_sdss:
        input:
            galaxies=f"{RESULTS}/survey/shards/{{shard}}/galaxies.parquet",
        output:
            status=f"{RESULTS}/survey/shards/{{shard}}/status-fetch.parquet",
            info=f"{RESULTS}/survey/shards/{{shard}}/fetch-info.parquet",
        params:
            cutouts=cutout_dir("survey"),
            cache=f"{FETCH_CACHE}/sas",
            sas_root=lookup(dpath="fetch/sas_root", within=config, default="https://data.sdss.org/sas"),
            skyserver=lookup(
                dpath="fetch/skyserver_url",
                within=config,
                default="https://skyserver.sdss.org/dr17/SkyServerWS/SearchTools/SqlSearch",
            )
            or "none",
            max_outside=lookup(dpath="fetch/max_outside", within=config, default=0.5),
            common=FETCH_COMMON,
        log:
            f"{RESULTS}/logs/fetch_sdss/{{shard}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/fetch_sdss/{{shard}}.tsv"
        resources:
            mem_mb=3000,
            runtime=120,
        conda:
            ENV
        shell:
            "clumpcat fetch sdss --galaxies {input.galaxies:q} --status-out {output.status:q} "
            "--info {output.info:q} --cutouts {params.cutouts:q} --cache {params.cache:q} "
            "--sas-root {params.sas_root:q} --skyserver-url {params.skyserver:q} "
            "--max-outside {params.max_outside} {params.common} --log {log:q}"


if FETCH and SURVEY == "hsc":

    rule fetch_hsc:
        input:
            galaxies=f"{RESULTS}/survey/shards/{{shard}}/galaxies.parquet",
        output:
            status=f"{RESULTS}/survey/shards/{{shard}}/status-fetch.parquet",
            info=f"{RESULTS}/survey/shards/{{shard}}/fetch-info.parquet",
        params:
            cutouts=cutout_dir("survey"),
            cache=f"{FETCH_CACHE}/das",
            das_url=lookup(
                dpath="hsc/das_url",
                within=config,
                default="https://hsc-release.mtk.nao.ac.jp/das_cutout/pdr3/cgi-bin/cutout",
            ),
            psf_url=lookup(
                dpath="hsc/psf_url",
                within=config,
                default="https://hsc-release.mtk.nao.ac.jp/psf/pdr3/cgi/getpsf",
            )
            or "none",
            rerun=lookup(dpath="hsc/rerun", within=config, default="pdr3_wide"),
            username_env=lookup(dpath="hsc/username_env", within=config, default="HSC_SSP_CAS_USERNAME"),
            password_env=lookup(dpath="hsc/password_env", within=config, default="HSC_SSP_CAS_PASSWORD"),
            mask_planes=" ".join(HscSettings.from_config(config.get("hsc") or {}).mask_planes),
            common=FETCH_COMMON,
        log:
            f"{RESULTS}/logs/fetch_hsc/{{shard}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/fetch_hsc/{{shard}}.tsv"
        resources:
            mem_mb=2000,
            runtime=180,
        conda:
            ENV
        shell:
            "clumpcat fetch hsc --galaxies {input.galaxies:q} --status-out {output.status:q} "
            "--info {output.info:q} --cutouts {params.cutouts:q} --cache {params.cache:q} "
            "--das-url {params.das_url:q} --psf-url {params.psf_url:q} --rerun {params.rerun} "
            "--username-env {params.username_env} --password-env {params.password_env} "
            "--mask-planes {params.mask_planes} {params.common} --log {log:q}"


if CROSSMATCH_OBJECTS and CROSSMATCH_PARENT:

    rule crossmatch:
        input:
            galaxies=CROSSMATCH_PARENT,
            hsc=CROSSMATCH_OBJECTS,
        output:
            CROSSMATCH_OUT,
        params:
            radius=lookup(dpath="crossmatch/radius_arcsec", within=config, default=1.0),
            # The ledger this results folder's catalogue writes, the released
            # ledger (the union of every run so far, so a run between two
            # cross-matches loses nothing) and the history of earlier cross-matches.
            # Missing files are skipped.
            processed=" ".join(
                f"'{path}'"
                for path in lookup(dpath="crossmatch/processed", within=config, default=None)
                or [f"{RESULTS}/ledger.parquet", f"{RESULTS}/release/ledger.parquet"]
            ),
            history=f"{RESULTS}/crossmatch/processed.parquet",
        log:
            f"{RESULTS}/logs/crossmatch/crossmatch.log",
        benchmark:
            f"{RESULTS}/benchmarks/crossmatch/crossmatch.tsv"
        resources:
            mem_mb=8000,
            runtime=60,
        conda:
            ENV
        shell:
            "clumpcat crossmatch --galaxies {input.galaxies:q} --hsc-objects {input.hsc:q} "
            "--out {output:q} --radius-arcsec {params.radius} --processed {params.processed} "
            "--history {params.history:q} --log {log:q}"
