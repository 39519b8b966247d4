# Survey access: SDSS frames from the SAS (or a local mirror) and HSC PDR3 cutouts
# from the DAS, one job per shard, plus the `crossmatch` target for reruns over
# a new HSC object table. Each job writes the shard's status table; cutouts go to
# the survey's cutout folder, frames to a cache shared by every shard.
# Config keys: fetch/{sas_root,cache,max_parallel,retries,timeout_s,backoff_s,
# skyserver_url,max_outside,on_network_error}, hsc/{das_url,psf_url,rerun,
# username_env,password_env}, crossmatch/{hsc_objects,radius_arcsec,processed,out}.


def fetch_setting(key, default):
    return lookup(dpath=f"fetch/{key}", within=config, default=default)


def hsc_setting(key, default):
    return lookup(dpath=f"hsc/{key}", within=config, default=default)


def crossmatch_setting(key, default):
    return lookup(dpath=f"crossmatch/{key}", within=config, default=default)


FETCH_CACHE = fetch_setting("cache", None) or f"{RESULTS}/cache"
FETCH_COMMON = (
    f"--max-parallel {fetch_setting('max_parallel', 4)} --retries {fetch_setting('retries', 5)} "
    f"--timeout-s {fetch_setting('timeout_s', 60)} --backoff-s {fetch_setting('backoff_s', 1.0)} "
    f"--on-network-error {fetch_setting('on_network_error', 'fail')}"
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
            sas_root=fetch_setting("sas_root", "https://data.sdss.org/sas"),
            skyserver=fetch_setting(
                "skyserver_url", "https://skyserver.sdss.org/dr17/SkyServerWS/SearchTools/SqlSearch"
            )
            or "none",
            max_outside=fetch_setting("max_outside", 0.5),
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
            "clumpcat fetch sdss --galaxies {input.galaxies:q} --status {output.status:q} "
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
            das_url=hsc_setting("das_url", "https://hsc-release.mtk.nao.ac.jp/das_cutout/pdr3/cgi-bin/cutout"),
            psf_url=hsc_setting("psf_url", "https://hsc-release.mtk.nao.ac.jp/psf/pdr3/cgi/getpsf") or "none",
            rerun=hsc_setting("rerun", "pdr3_wide"),
            username_env=hsc_setting("username_env", "HSC_SSP_CAS_USERNAME"),
            password_env=hsc_setting("password_env", "HSC_SSP_CAS_PASSWORD"),
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
            "clumpcat fetch hsc --galaxies {input.galaxies:q} --status {output.status:q} "
            "--info {output.info:q} --cutouts {params.cutouts:q} --cache {params.cache:q} "
            "--das-url {params.das_url:q} --psf-url {params.psf_url:q} --rerun {params.rerun} "
            "--username-env {params.username_env} --password-env {params.password_env} "
            "{params.common} --log {log:q}"


if crossmatch_setting("hsc_objects", None) and config["galaxies"]:

    rule crossmatch:
        input:
            galaxies=config["galaxies"],
            hsc=crossmatch_setting("hsc_objects", None),
        output:
            crossmatch_setting("out", None) or f"{RESULTS}/crossmatch/hsc-galaxies.parquet",
        params:
            radius=crossmatch_setting("radius_arcsec", 1.0),
            processed=" ".join(
                f"'{p}'" for p in crossmatch_setting("processed", None) or [f"{RESULTS}/hsc/ledger.parquet"]
            ),
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
            "--out {output:q} --radius-arcsec {params.radius} --processed {params.processed} --log {log:q}"
