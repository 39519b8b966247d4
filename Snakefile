# clumpcat: giant star-forming clumps, from survey images to a released catalogue.
# A table of contents: configuration, one file of rules per stage, and `all`.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/manifests.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/render.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/classifier.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/detect.smk"
include: "workflow/rules/postprocess.smk"
include: "workflow/rules/photometry.smk"
include: "workflow/rules/catalogue.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/experiment.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
