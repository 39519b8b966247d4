# Manifests: the lists of shards and tables that aggregating rules (catalogue,
# evaluate, plots, train, ...) read, one path per line (clumpcat.manifests).
# No rule puts such a list on its command line: Linux caps one argument at
# 128 KiB, about 5,000 shard paths. A manifest's name carries the digest of
# its list, so an unchanged list is never rewritten and a changed one is a
# new file (its consumers rerun under any --rerun-triggers).


rule manifest:
    output:
        manifest=f"{RESULTS}/manifests/{{listing}}-{{digest}}.txt",
    wildcard_constraints:
        listing=r"[\w.]+-[\w.-]+",
        digest=r"[0-9a-f]{12}",
    params:
        paths=manifest_paths,
    log:
        f"{RESULTS}/logs/manifest/{{listing}}-{{digest}}.log",
    localrule: True
    conda:
        ENV
    script:
        "../scripts/write_manifest.py"
