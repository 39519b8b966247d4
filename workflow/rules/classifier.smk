# The "Zoobot Clumps" backbone (paper App. B): a clumpy / not-clumpy classifier
# trained on the training sample's renders; its encoder is the zoobot-clumps
# detector's backbone when weights.zoobot_clumps is null. Target:
# `snakemake zoobot_clumps`.


rule train_classifier:
    input:
        unpack(classifier_inputs),
    output:
        weights=CLASSIFIER_WEIGHTS,
        metrics=f"{CLASSIFIER_DIR}/metrics.json",
        roc=report(
            f"{CLASSIFIER_DIR}/roc.png",
            caption="../report/classifier.rst",
            category="Zoobot Clumps",
        ),
    params:
        out_dir=output_folder,
        inputs=classifier_input_options,
        settings=CLASSIFIER_OPTIONS,
    log:
        f"{RESULTS}/logs/train_classifier/classifier.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_classifier/classifier.tsv"
    # All local cores; on a cluster (no --cores) 1, or what the profile's set-threads says.
    threads: lambda wildcards: workflow.resource_settings.cores or 1
    resources:
        mem_mb=16000,
        runtime=12 * 60,
        gpu=min(1, config["training"]["gpus"]),
    conda:
        ENV
    shell:
        "clumpcat train-classifier {params.inputs} "
        "--out-dir {params.out_dir} {params.settings} --threads {threads} --resume 2> {log}"


rule zoobot_clumps:
    input:
        weights=CLASSIFIER_WEIGHTS,
        metrics=f"{CLASSIFIER_DIR}/metrics.json",
