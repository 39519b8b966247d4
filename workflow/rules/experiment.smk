# Experiment mode (paper App. C, Figs. 8-9): every set-up in experiment.setups
# trained on run-groups of experiment.sizes images of the training sample,
# compared on their test splits. Target: `snakemake experiment`. Each run
# trains through rule train's launcher: torchrun (DDP) when training.gpus > 1.


rule train_experiment:
    input:
        unpack(training_inputs),
        backbone=experiment_backbone_input,
    output:
        metrics=f"{RESULTS}/experiment/{{setup}}-{{size}}/test_metrics.json",
    params:
        out_dir=output_folder,
        lists=training_list_options,
        launcher=training_launcher,
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
        "{params.launcher} train {params.lists} "
        "{params.weights} --out-dir {params.out_dir} --max-images {wildcards.size} "
        "{params.settings} --threads {threads} --resume 2> {log}"


rule experiment:
    input:
        unpack(experiment_inputs),
        metrics=experiment_runs,
    output:
        table=f"{RESULTS}/experiment/experiment.parquet",
        plot=report(
            f"{RESULTS}/experiment/experiment.png",
            caption="../report/experiment.rst",
            category="Experiment",
        ),
    log:
        f"{RESULTS}/logs/experiment/summary.log",
    conda:
        ENV
    shell:
        "clumpcat experiment --runs @{input.runs} --out-table {output.table} "
        "--out-plot {output.plot} 2> {log}"
