"""Script of rule `manifest`: write the listed paths (params.paths) into the manifest.

The list reaches this script inside Snakemake's job object, never on a command
line (DESIGN.md: no rule puts a list of shards or files on a command line).
"""

from clumpcat.manifests import write_manifest

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
paths = snakemake.params.paths
written = write_manifest(snakemake.output.manifest, paths)
with open(snakemake.log[0], "w") as log:
    state = "written" if written else "unchanged"
    print(f"{snakemake.output.manifest}: {len(paths)} paths, {state}", file=log)
