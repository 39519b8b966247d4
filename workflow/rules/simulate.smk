# Galaxies for each sample: simulated (synthetic survey and training set),
# split from the user's table, or injected into the survey's own cutouts.


if SYNTHETIC or "training" in SAMPLES:

    rule simulate:
        output:
            galaxies=f"{RESULTS}/{{sample}}/shards/{{shard}}/galaxies.parquet",
            truth=f"{RESULTS}/{{sample}}/shards/{{shard}}/truth.parquet",
        wildcard_constraints:
            sample="survey|training" if SYNTHETIC else "training",
        params:
            seed=simulate_seed,
            first=simulate_first,
            number=simulate_count,
            total=simulate_total,
            cutouts=cutouts_param,
            options=SIMULATE_OPTIONS,
        log:
            f"{RESULTS}/logs/simulate/{{sample}}-{{shard}}.log",
        benchmark:
            f"{RESULTS}/benchmarks/simulate/{{sample}}-{{shard}}.tsv"
        resources:
            mem_mb=2000,
            runtime=30,
        conda:
            ENV
        shell:
            "clumpcat simulate --n {params.total} --seed {params.seed} "
            "--first {params.first} --count {params.number} "
            "--galaxies {output.galaxies} --truth {output.truth} "
            "--cutouts {params.cutouts} {params.options} 2> {log}"


if not SYNTHETIC:

    rule split_galaxies:
        input:
            config["galaxies"],
        output:
            expand(f"{RESULTS}/survey/shards/{{shard}}/galaxies.parquet", shard=SHARDS["survey"]),
        params:
            out_dir=f"{RESULTS}/survey/shards",
            shard_size=SHARD_SIZE,
        log:
            f"{RESULTS}/logs/split_galaxies.log",
        resources:
            mem_mb=4000,
            runtime=60,
        conda:
            ENV
        shell:
            "clumpcat validate --galaxies {input} --shard-size {params.shard_size} "
            "--out-dir {params.out_dir} 2> {log}"


rule inject:
    input:
        galaxies=survey_galaxies,
        status=survey_render_status,
        segments=survey_segments,
    output:
        truth=f"{RESULTS}/injected/shards/{{shard}}/truth.parquet",
    params:
        cutouts=cutout_dir("survey"),
        out_cutouts=cutout_dir("injected"),
        seed=config["evaluate"]["inject_seed"],
        per_galaxy=config["evaluate"]["inject_per_galaxy"],
    log:
        f"{RESULTS}/logs/inject/{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/inject/{{shard}}.tsv"
    # The survey shard's galaxies are injected in this many processes (shard_threads).
    threads: per_shard_threads(config["shard_threads"], cluster=2, sample="survey")
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        ENV
    shell:
        "clumpcat inject --galaxies {input.galaxies} --cutouts {params.cutouts} "
        "--out-cutouts {params.out_cutouts} --truth {output.truth} --segments {input.segments} "
        "--seed {params.seed} --per-galaxy {params.per_galaxy} --workers {threads} 2> {log}"


rule merge_galaxies:
    input:
        unpack(merge_inputs),
    output:
        f"{RESULTS}/{{sample}}/galaxies.parquet",
    wildcard_constraints:
        sample="survey|training",
    log:
        f"{RESULTS}/logs/merge_galaxies/{{sample}}.log",
    conda:
        ENV
    shell:
        "clumpcat merge @{input.tables} --out {output} 2> {log}"
