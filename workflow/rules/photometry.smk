# ugriz (or grizy) aperture photometry of every clump (paper App. E).


rule photometry:
    input:
        galaxies=galaxies_of,
        clumps=f"{RESULTS}/{{sample}}/shards/{{shard}}/clumps.parquet",
        status=f"{RESULTS}/{{sample}}/shards/{{shard}}/status-postprocess.parquet",
        segments=f"{RESULTS}/{{sample}}/shards/{{shard}}/segments.npz",
    output:
        photometry=f"{RESULTS}/{{sample}}/shards/{{shard}}/photometry.parquet",
        status=f"{RESULTS}/{{sample}}/shards/{{shard}}/status-photometry.parquet",
    params:
        cutouts=cutouts_param,
        bands=" ".join(BANDS),
        survey=SURVEY,
        correction=config["photometry"]["aperture_correction"],
        background=config["photometry"]["background"],
        width_err=(
            f"--psf-width-err-image {config['photometry']['psf_width_err_image']} "
            f"--psf-width-err-analytic {config['photometry']['psf_width_err_analytic']}"
        ),
        recentre="--recentre" if config["photometry"]["recentre"] else "--no-recentre",
        ebv=sfd_option,
    log:
        f"{RESULTS}/logs/photometry/{{sample}}-{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/photometry/{{sample}}-{{shard}}.tsv"
    # The shard's galaxies are measured in this many processes (shard_threads).
    threads: per_shard_threads(config["shard_threads"], cluster=2)
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        ENV
    shell:
        "clumpcat photometry --galaxies {input.galaxies} --clumps {input.clumps} "
        "--cutouts {params.cutouts} --status-in {input.status} --segments {input.segments} "
        "--status-out {output.status} --out {output.photometry} --bands {params.bands} --survey {params.survey} "
        "--aperture-correction {params.correction} --background {params.background} {params.width_err} "
        "{params.recentre} {params.ebv} --workers {threads} 2> {log}"
