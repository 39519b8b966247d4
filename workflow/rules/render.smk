# RGB rendering (Lupton for SDSS, asinh for HSC; paper App. A) and label boxes.
# Every cutout is validated and gets its geometry row; PNGs only where read
# (training, the gallery) or asked for (render.png: all): see png_option.


rule render:
    input:
        galaxies=galaxies_of,
        status=source_status,
        truth=truth_of,
    output:
        render=f"{RESULTS}/{{sample}}/shards/{{shard}}/render.parquet",
        labels=f"{RESULTS}/{{sample}}/shards/{{shard}}/labels.parquet",
        status=f"{RESULTS}/{{sample}}/shards/{{shard}}/status-render.parquet",
    params:
        cutouts=cutouts_param,
        rgb=rgb_dir,
        png=png_option,
        status=status_option,
        truth=truth_option,
        survey=SURVEY,
    log:
        f"{RESULTS}/logs/render/{{sample}}-{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/render/{{sample}}-{{shard}}.tsv"
    resources:
        mem_mb=2000,
        runtime=30,
    conda:
        ENV
    shell:
        "clumpcat render --galaxies {input.galaxies} --cutouts {params.cutouts} "
        "--rgb-dir {params.rgb} {params.png} --survey {params.survey} {params.status} {params.truth} "
        "--labels-detectable-only --labels-out {output.labels} "
        "--status-out {output.status} --out {output.render} 2> {log}"
