# Experiment mode (paper App. C, Figs. 8-9): every set-up in experiment.setups
# trained on run-groups of experiment.sizes images of the training sample,
# compared on their test splits. Target: `snakemake experiment`.


rule train_experiment:
    input:
        render=training_renders,
        labels=training_labels,
        backbone=experiment_backbone_input,
    output:
        metrics=f"{RESULTS}/experiment/{{setup}}-{{size}}/test_metrics.json",
    params:
        out_dir=output_folder,
        weights=experiment_weights_option,
        settings=experiment_options,
    log:
        f"{RESULTS}/logs/experiment/{{setup}}-{{size}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/experiment/{{setup}}-{{size}}.tsv"
    # All local cores; on a cluster (no --cores) 1, or what the profile's set-threads says.
    threads: lambda wildcards: workflow.resource_settings.cores or 1
    resources:
        mem_mb=16000,
        runtime=24 * 60,
        gpu=config["training"]["gpus"],
    conda:
        ENV
    shell:
        "clumpcat train --render {input.render} --labels {input.labels} "
        "{params.weights} --out-dir {params.out_dir} --max-images {wildcards.size} "
        "{params.settings} --threads {threads} --resume 2> {log}"


rule experiment:
    input:
        experiment_runs,
    output:
        table=f"{RESULTS}/experiment/experiment.parquet",
        plot=report(
            f"{RESULTS}/experiment/experiment.png",
            caption="../report/experiment.rst",
            category="Experiment",
        ),
    params:
        runs=experiment_run_dirs,
    log:
        f"{RESULTS}/logs/experiment/summary.log",
    conda:
        ENV
    shell:
        "clumpcat experiment --runs {params.runs} --out-table {output.table} "
        "--out-plot {output.plot} 2> {log}"
