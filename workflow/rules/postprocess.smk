# NMS, merging within one r-band PSF FWHM, the host-galaxy mask (paper 4.3) and
# each candidate's own detection S/N (postprocess.min_snr).


rule postprocess:
    input:
        galaxies=galaxies_of,
        detections=f"{RESULTS}/{{sample}}/shards/{{shard}}/detections.parquet",
        status=f"{RESULTS}/{{sample}}/shards/{{shard}}/status-detect.parquet",
        segments=f"{RESULTS}/{{sample}}/shards/{{shard}}/segments.npz",
    output:
        clumps=f"{RESULTS}/{{sample}}/shards/{{shard}}/clumps.parquet",
        status=f"{RESULTS}/{{sample}}/shards/{{shard}}/status-postprocess.parquet",
    params:
        cutouts=cutouts_param,
        settings=postprocess_options,
        floor=config["detect"]["score_floor"],
    log:
        f"{RESULTS}/logs/postprocess/{{sample}}-{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/postprocess/{{sample}}-{{shard}}.tsv"
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        ENV
    shell:
        "clumpcat postprocess --galaxies {input.galaxies} --detections {input.detections} "
        "--cutouts {params.cutouts} --status-in {input.status} "
        "--status-out {output.status} --out {output.clumps} "
        "--score-floor {params.floor} --segments {input.segments} {params.settings} 2> {log}"
