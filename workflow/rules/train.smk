# Training the detector (paper 4.2) when no model is given. On SLURM the rule
# asks for GPUs; with more than one it runs under torchrun (DDP).


rule train:
    input:
        unpack(training_inputs),
        backbone=backbone_weights_input,
    output:
        model=f"{RESULTS}/models/{TRAINING_SETUP}/model.pt",
        metrics=f"{RESULTS}/models/{TRAINING_SETUP}/metrics.csv",
    params:
        out_dir=output_folder,
        lists=training_list_options,
        launcher=training_launcher,
        weights=backbone_weights_option,
        settings=TRAINING_OPTIONS,
    log:
        f"{RESULTS}/logs/train/{TRAINING_SETUP}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{TRAINING_SETUP}.tsv"
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
        "{params.weights} --out-dir {params.out_dir} {params.settings} "
        "--threads {threads} --resume 2> {log}"
