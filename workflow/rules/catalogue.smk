# The released catalogue: shards merged by streaming into clumps.parquet,
# catalogue.parquet/.fits (the 67 columns of paper Table 5 + extras) and the
# ledger, then the release bundle with README, provenance and SHA256SUMS.


rule catalogue:
    input:
        unpack(catalogue_inputs),
        galaxies=config["galaxies"] or f"{RESULTS}/survey/galaxies.parquet",
        model=MODEL,
    output:
        clumps=f"{RESULTS}/clumps.parquet",
        catalogue=f"{RESULTS}/catalogue.parquet",
        fits=f"{RESULTS}/catalogue.fits",
        ledger=f"{RESULTS}/ledger.parquet",
        sums=f"{RESULTS}/release/SHA256SUMS",
    params:
        threshold=config["catalogue"]["score_threshold"],
        out_dir=output_folder,
        configfile=workflow.configfiles[0] if workflow.configfiles else "config.yaml",
        # The configuration that runs (file + --config overrides + defaults): a
        # change of any setting reruns the release, and provenance records it.
        effective=json.dumps(EFFECTIVE_CONFIG, sort_keys=True),
    log:
        f"{RESULTS}/logs/catalogue.log",
    benchmark:
        f"{RESULTS}/benchmarks/catalogue.tsv"
    resources:
        mem_mb=4000,
        runtime=120,
    conda:
        ENV
    shell:
        "clumpcat catalogue --shards @{input.shards} --out-dir {params.out_dir} "
        "--galaxies {input.galaxies} --score-threshold {params.threshold} --release --config {params.configfile} "
        "--effective-config {params.effective:q} "
        "--model {input.model} 2> {log}"
