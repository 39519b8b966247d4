# Evaluation against truth (paper 4.4), the classical baseline, the
# injection-recovery selection function and photometric pulls (the injected
# sample's photometry comes from rule photometry), metrics per observing
# condition, and the report's figures.


rule baseline:
    input:
        galaxies=galaxies_of,
        status=f"{RESULTS}/{{sample}}/shards/{{shard}}/status-render.parquet",
        segments=f"{RESULTS}/{{sample}}/shards/{{shard}}/segments.npz",
    output:
        baseline=f"{RESULTS}/{{sample}}/shards/{{shard}}/baseline.parquet",
        status=f"{RESULTS}/{{sample}}/shards/{{shard}}/status-baseline.parquet",
    params:
        cutouts=cutouts_param,
    log:
        f"{RESULTS}/logs/baseline/{{sample}}-{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/baseline/{{sample}}-{{shard}}.tsv"
    # The shard's galaxies are measured in this many processes (shard_threads).
    threads: per_shard_threads(config["shard_threads"], cluster=2)
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        ENV
    shell:
        "clumpcat baseline --galaxies {input.galaxies} --cutouts {params.cutouts} "
        "--status-in {input.status} --segments {input.segments} --out {output.baseline} --status-out {output.status} "
        "--workers {threads} 2> {log}"


rule evaluate:
    input:
        unpack(evaluation_inputs),
    output:
        metrics=f"{RESULTS}/metrics.json",
        summary=report(
            f"{RESULTS}/evaluation/summary.csv",
            caption="../report/summary.rst",
            category="Evaluation",
        ),
    params:
        options=evaluation_options,
        threshold=config["catalogue"]["score_threshold"],
        out_dir=output_folder_of_summary,
        min_snr=config["postprocess"]["min_snr"],
    log:
        f"{RESULTS}/logs/evaluate.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate.tsv"
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        ENV
    shell:
        "clumpcat evaluate --clumps {input.clumps} {params.options} --score-threshold {params.threshold} "
        "--out-dir {params.out_dir} --metrics {output.metrics} --min-snr {params.min_snr} 2> {log}"


rule plots:
    input:
        unpack(plot_inputs),
    output:
        done=f"{RESULTS}/figures/.done",
        figures=[
            report(
                f"{RESULTS}/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="Evaluation",
            )
            for name in FIGURES
        ],
    params:
        training=training_option,
        lists=plot_list_options,
        threshold=0.5,
        out_dir=output_folder,
        evaluation=evaluation_folder,
    log:
        f"{RESULTS}/logs/plots.log",
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV
    shell:
        "clumpcat plots --out-dir {params.out_dir} --evaluation {params.evaluation} "
        "{params.training} --catalogue {input.catalogue} {params.lists} "
        "--clumps {input.clumps} --threshold {params.threshold} 2> {log}"
