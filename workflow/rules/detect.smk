# Batched inference over each shard's cutouts, rendered on the way (GPU or CPU;
# no PNG is read: the render rule's PNGs serve training and the gallery).


rule detect:
    input:
        model=MODEL,
        galaxies=galaxies_of,
        status=f"{RESULTS}/{{sample}}/shards/{{shard}}/status-render.parquet",
    output:
        detections=f"{RESULTS}/{{sample}}/shards/{{shard}}/detections.parquet",
        status=f"{RESULTS}/{{sample}}/shards/{{shard}}/status-detect.parquet",
    params:
        cutouts=cutouts_param,
        settings=DETECT_OPTIONS,
        survey=SURVEY,
    log:
        f"{RESULTS}/logs/detect/{{sample}}-{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/detect/{{sample}}-{{shard}}.tsv"
    # One thread per job where a sample has as many shards as cores (detect.threads).
    threads: per_shard_threads(config["detect"]["threads"], cluster=1)
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=0 if config["detect"]["device"] == "cpu" else 1,
    conda:
        ENV
    shell:
        "clumpcat detect --model {input.model} --galaxies {input.galaxies} "
        "--cutouts {params.cutouts} --survey {params.survey} --status-in {input.status} "
        "--status-out {output.status} --out {output.detections} "
        "{params.settings} --threads {threads} 2> {log}"
