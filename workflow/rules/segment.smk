# Each galaxy's host segment (r band, paper 4.3.2), computed once per shard and
# read by inject, postprocess, photometry and the baseline.


rule segment:
    input:
        galaxies=galaxies_of,
        status=f"{RESULTS}/{{sample}}/shards/{{shard}}/status-render.parquet",
    output:
        segments=f"{RESULTS}/{{sample}}/shards/{{shard}}/segments.npz",
    params:
        cutouts=cutouts_param,
        nsigma=config["postprocess"]["host_nsigma"],
    log:
        f"{RESULTS}/logs/segment/{{sample}}-{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/segment/{{sample}}-{{shard}}.tsv"
    # The shard's galaxies are measured in this many processes (shard_threads).
    threads: per_shard_threads(config["shard_threads"], cluster=2)
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        ENV
    shell:
        "clumpcat segment --galaxies {input.galaxies} --cutouts {params.cutouts} "
        "--status-in {input.status} --out {output.segments} --host-nsigma {params.nsigma} --workers {threads} 2> {log}"
