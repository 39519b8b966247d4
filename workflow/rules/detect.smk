# Batched inference over each shard's rendered images (GPU or CPU).


rule detect:
    input:
        model=MODEL,
        render=f"{RESULTS}/{{sample}}/shards/{{shard}}/render.parquet",
        status=f"{RESULTS}/{{sample}}/shards/{{shard}}/status-render.parquet",
    output:
        detections=f"{RESULTS}/{{sample}}/shards/{{shard}}/detections.parquet",
        status=f"{RESULTS}/{{sample}}/shards/{{shard}}/status-detect.parquet",
    params:
        cutouts=cutouts_param,
        settings=DETECT_OPTIONS,
    log:
        f"{RESULTS}/logs/detect/{{sample}}-{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/detect/{{sample}}-{{shard}}.tsv"
    threads: config["detect"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=0 if config["detect"]["device"] == "cpu" else 1,
    conda:
        ENV
    shell:
        "clumpcat detect --model {input.model} --render {input.render} "
        "--cutouts {params.cutouts} --status-in {input.status} "
        "--status-out {output.status} --out {output.detections} "
        "{params.settings} --threads {threads} 2> {log}"
