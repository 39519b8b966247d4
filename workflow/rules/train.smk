# Training the detector (paper 4.2) when no model is given. On SLURM the rule
# asks for GPUs; with more than one it runs under torchrun (DDP).


def training_renders(wildcards):
    return all_shards(TRAIN_SAMPLE, "render.parquet")


def training_labels(wildcards):
    if config["training"]["labels"]:
        return config["training"]["labels"]
    return all_shards(TRAIN_SAMPLE, "labels.parquet")


def training_launcher(wildcards, resources):
    if resources.gpu > 1:
        return f"torchrun --standalone --nproc_per_node={resources.gpu} -m clumpcat"
    return "clumpcat"


def backbone_weights_option(wildcards):
    key = {"imagenet": "imagenet", "imagenet-finetuned": "imagenet", "zoobot": "zoobot",
           "zoobot-finetuned": "zoobot", "zoobot-clumps": "zoobot_clumps"}.get(TRAINING_SETUP)
    path = config["weights"].get(key) if key else None
    return f"--backbone-weights {path}" if path else ""


rule train:
    input:
        render=training_renders,
        labels=training_labels,
    output:
        model=f"{RESULTS}/models/{TRAINING_SETUP}/model.pt",
        metrics=f"{RESULTS}/models/{TRAINING_SETUP}/metrics.csv",
    params:
        out_dir=f"{RESULTS}/models/{TRAINING_SETUP}",
        launcher=training_launcher,
        weights=backbone_weights_option,
        cfg=config["training"],
    log:
        f"{RESULTS}/logs/train/{TRAINING_SETUP}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{TRAINING_SETUP}.tsv"
    threads: workflow.cores
    resources:
        mem_mb=16000,
        runtime=24 * 60,
        gpu=config["training"]["gpus"],
    conda:
        ENV
    shell:
        "{params.launcher} train --render {input.render} --labels {input.labels} "
        "--setup {TRAINING_SETUP} {params.weights} --out-dir {params.out_dir} "
        "--epochs {params.cfg[epochs]} --batch-size {params.cfg[batch_size]} "
        "--lr {params.cfg[lr]} --weight-decay {params.cfg[weight_decay]} "
        "--seed {params.cfg[seed]} --device {params.cfg[device]} "
        "--num-workers {params.cfg[num_workers]} --threads {threads} --resume 2> {log}"
