# Configuration, validation and input functions; no rules here.
import functools
import json
import math
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate

from clumpcat.manifests import manifest_digest
from clumpcat.parallel import shard_job_threads
from clumpcat.render.selection import GALLERY_SIZE, gallery_pngs_in_shard
from clumpcat.settings import (
    DetectSettings,
    HscSettings,
    PostprocessSettings,
    SimulateSettings,
    TrainingSettings,
    effective_config,
)


validate(config, schema="../schemas/config.schema.yaml")
#: The configuration that runs: config.yaml, --config overrides, defaults filled in.
EFFECTIVE_CONFIG = effective_config(config)

RESULTS = config["results"].rstrip("/")
SURVEY = config["survey"]
SHARD_SIZE = config["shard_size"]
SYNTHETIC = config["galaxies"] is None
if SYNTHETIC and SURVEY != "synthetic":
    raise ValueError(
        f"'survey' is '{SURVEY}' but no 'galaxies' table is given: real surveys need "
        "--config galaxies=TABLE (only survey=synthetic simulates its own galaxies)"
    )
PRETRAINED_MODEL = config["model"] or config["weights"]["paper"]
TRAIN = PRETRAINED_MODEL is None
TRAINING_SETUP = config["training"]["setup"]
MODEL = PRETRAINED_MODEL or f"{RESULTS}/models/{TRAINING_SETUP}/model.pt"
EVALUATE = config["evaluate"]["enabled"] and (SYNTHETIC or config["truth"] is not None)
INJECT = EVALUATE and config["evaluate"]["injection"]
ENV = "../../envs/clumpcat.yaml"
#: The package of the interpreter that runs Snakemake, whatever PATH holds
#: (an unactivated venv works as `.venv/bin/snakemake ...`).
CLUMPCAT = f"{shlex.quote(sys.executable)} -m clumpcat"
# Every rule's shell calls `clumpcat`: a shell function bound to that interpreter,
# so no job depends on PATH (Slurm jobs re-run this file with the same interpreter).
# (Snakemake formats the prefix too: its literal braces are doubled once more.)
shell.prefix(f"set -euo pipefail; clumpcat() {{{{ {CLUMPCAT} \"$@\"; }}}}; ")
#: Bands of the survey (constants.SURVEY_BANDS; the synthetic survey imitates SDSS).
BANDS = ["g", "r", "i", "z", "y"] if SURVEY == "hsc" else ["u", "g", "r", "i", "z"]


def count_galaxies(path):
    """Rows of the galaxy table, read from Parquet metadata or by counting CSV lines."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"'galaxies': {path} does not exist")
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    with open(path, "rb") as handle:
        return max(sum(1 for _ in handle) - 1, 0)


def shard_ids(n):
    """Shard names 00000, 00001, ... for n galaxies."""
    return [f"{k:05d}" for k in range(math.ceil(n / SHARD_SIZE))]


#: HSC reruns (`snakemake crossmatch`): the new HSC object table, the parent galaxy
#: table it is matched against, and the galaxy table of new matches it writes.
CROSSMATCH_OBJECTS = lookup(dpath="crossmatch/hsc_objects", within=config, default=None)
CROSSMATCH_PARENT = lookup(dpath="crossmatch/galaxies", within=config, default=None) or config["galaxies"]
CROSSMATCH_OUT = (
    lookup(dpath="crossmatch/out", within=config, default=None) or f"{RESULTS}/crossmatch/hsc-galaxies.parquet"
)
if CROSSMATCH_OBJECTS and CROSSMATCH_PARENT == CROSSMATCH_OUT:
    raise ValueError(
        f"'galaxies' is the cross-match output {CROSSMATCH_OUT}: set 'crossmatch.galaxies' to the parent "
        "galaxy table the HSC objects are matched against"
    )
if SYNTHETIC:
    N_SURVEY = config["simulate"]["n_galaxies"]
elif CROSSMATCH_OBJECTS and config["galaxies"] == CROSSMATCH_OUT and not Path(CROSSMATCH_OUT).exists():
    N_SURVEY = 0  # `snakemake crossmatch` writes the galaxy table first
else:
    N_SURVEY = count_galaxies(config["galaxies"])
SAMPLES = {"survey": N_SURVEY}
if TRAIN and config["training"]["labels"] is None:
    SAMPLES["training"] = config["training"]["n_galaxies"]
if INJECT:
    SAMPLES["injected"] = N_SURVEY
SHARDS = {sample: shard_ids(n) for sample, n in SAMPLES.items()}
TRAIN_SAMPLE = "training" if "training" in SAMPLES else "survey"


def per_shard_threads(setting, cluster, sample=None):
    """A per-shard rule's threads: `setting`, or for null the local --cores shared
    out among the shards of the job's sample (`sample` for rules without that
    wildcard; clumpcat.parallel.shard_job_threads); `cluster` where jobs run
    elsewhere (a Slurm job recomputes the same value)."""

    def threads(wildcards):
        local = not (workflow.non_local_exec or workflow.remote_exec)
        cores = workflow.resource_settings.cores if local else None
        shards = len(SHARDS[sample or wildcards.sample])
        return shard_job_threads(setting, cores, shards, cluster)

    return threads


wildcard_constraints:
    sample="|".join(SAMPLES),
    shard=r"\d{5}",


def cutout_dir(sample):
    """Folder of a sample's cutouts: the user's folder for the survey, if given."""
    if sample == "survey" and config["cutouts"]:
        return config["cutouts"]
    return f"{RESULTS}/{sample}/cutouts"


def shard_path(sample, shard, name):
    return f"{RESULTS}/{sample}/shards/{shard}/{name}"


def all_shards(sample, name):
    return [shard_path(sample, s, name) for s in SHARDS[sample]]


def manifest_entries(listing):
    """The paths a manifest lists, by the manifest's name (rules/manifests.smk):
    SAMPLE-shards (the sample's shard folders), SAMPLE-TABLE (TABLE of every
    shard of the sample) or experiment-runs (the experiment's run folders)."""
    if listing == "experiment-runs":
        return experiment_run_dirs(None)
    sample, _, table = listing.partition("-")
    if sample not in SHARDS:
        raise ValueError(f"manifest '{listing}': no sample '{sample}' in this run (samples: {', '.join(SHARDS)})")
    if table == "shards":
        return [f"{RESULTS}/{sample}/shards/{s}" for s in SHARDS[sample]]
    return all_shards(sample, table)


@functools.lru_cache(maxsize=None)
def manifest(listing):
    """The manifest file of a listing, named by its digest: written once per list."""
    return f"{RESULTS}/manifests/{listing}-{manifest_digest(manifest_entries(listing))}.txt"


def manifest_paths(wildcards):
    """The listed paths, as params of the manifest rule (never on a command line)."""
    paths = manifest_entries(wildcards.listing)
    if manifest_digest(paths) != wildcards.digest:
        raise ValueError(
            f"manifest {wildcards.listing}-{wildcards.digest}: this run lists other paths "
            f"(digest {manifest_digest(paths)}); ask for {manifest(wildcards.listing)}"
        )
    return paths


def listed(inputs, key, listing):
    """Add a list of files to a rule's named inputs: the manifest as `key`
    (what the command reads) and the files as `key_files` (what the job waits for)."""
    inputs[key] = manifest(listing)
    inputs[f"{key}_files"] = manifest_entries(listing)
    return inputs


def list_option(input, key):
    """`--KEY @MANIFEST` for a listed input (see `listed`), `--KEY FILE` for one file."""
    prefix = "@" if f"{key}_files" in input.keys() else ""
    return f"--{key.replace('_', '-')} {prefix}{input[key]}"


def source_status(wildcards):
    """Status table of the step that produced a shard's cutouts, if it writes one."""
    if wildcards.sample == "survey" and not SYNTHETIC and not config["cutouts"]:
        return shard_path("survey", wildcards.shard, "status-fetch.parquet")
    return []


def has_truth(sample):
    return sample == "injected" or (sample in ("survey", "training") and SYNTHETIC)


def final_outputs():
    outputs = [
        f"{RESULTS}/clumps.parquet",
        f"{RESULTS}/catalogue.parquet",
        f"{RESULTS}/catalogue.fits",
        f"{RESULTS}/ledger.parquet",
        f"{RESULTS}/release/SHA256SUMS",
    ]
    if EVALUATE:
        outputs += [f"{RESULTS}/metrics.json", f"{RESULTS}/figures/.done"]
    return outputs


def truth_of(wildcards):
    """A shard's truth table, for samples that have one."""
    if has_truth(wildcards.sample):
        return shard_path(wildcards.sample, wildcards.shard, "truth.parquet")
    return []


def rgb_dir(wildcards):
    return f"{RESULTS}/{wildcards.sample}/rgb"


def png_option(wildcards):
    """`--png` of a render job: every PNG of the sample the detector trains on (its crops
    are read from PNGs) or with render.png: all; else the survey's gallery galaxies (the
    first GALLERY_SIZE of the sample, which `clumpcat plots` shows) and none of the
    injected sample (detection renders from the cutouts)."""
    trains_on = wildcards.sample == TRAIN_SAMPLE and TRAIN
    if EFFECTIVE_CONFIG["render"]["png"] == "all" or trains_on:
        return "--png all"
    if wildcards.sample == "survey":
        return f"--png first:{gallery_pngs_in_shard(int(wildcards.shard), SHARD_SIZE, GALLERY_SIZE)}"
    return "--png none"


def status_option(wildcards, input):
    """`--status-in FILE` when the previous step wrote a status table."""
    return f"--status-in {input.status}" if input.get("status") else ""


def truth_option(wildcards, input):
    return f"--truth {input.truth}" if input.get("truth") else ""


# ---- input functions and parameters of the stage rules ----


def simulate_seed(wildcards):
    return config["simulate" if wildcards.sample == "survey" else "training"]["seed"]


def simulate_first(wildcards):
    return int(wildcards.shard) * SHARD_SIZE


def simulate_count(wildcards):
    return min(SHARD_SIZE, SAMPLES[wildcards.sample] - simulate_first(wildcards))


def simulate_total(wildcards):
    return SAMPLES[wildcards.sample]


def cutouts_param(wildcards):
    return cutout_dir(wildcards.sample)


def survey_galaxies(wildcards):
    return shard_path("survey", wildcards.shard, "galaxies.parquet")


def survey_render_status(wildcards):
    return shard_path("survey", wildcards.shard, "status-render.parquet")


def survey_segments(wildcards):
    return shard_path("survey", wildcards.shard, "segments.npz")


def postprocess_options(wildcards):
    """postprocess settings as options; min_snr 0 for the injected sample, whose
    evaluation measures what the S/N cut costs."""
    section = dict(config.get("postprocess") or {})
    if wildcards.sample == "injected":
        section["min_snr"] = 0.0
    return PostprocessSettings.cli_args(section)


def galaxies_of(wildcards):
    """A shard's galaxy table; injected shards share the survey's galaxies."""
    sample = "survey" if wildcards.sample == "injected" else wildcards.sample
    return shard_path(sample, wildcards.shard, "galaxies.parquet")


def merge_inputs(wildcards):
    return listed({}, "tables", f"{wildcards.sample}-galaxies.parquet")


def training_inputs(wildcards):
    """Renders and labels of the training sample (manifests), or the configured label table."""
    inputs = listed({}, "render", f"{TRAIN_SAMPLE}-render.parquet")
    if config["training"]["labels"]:
        inputs["labels"] = config["training"]["labels"]
    else:
        listed(inputs, "labels", f"{TRAIN_SAMPLE}-labels.parquet")
    return inputs


def training_list_options(wildcards, input):
    return f"{list_option(input, 'render')} {list_option(input, 'labels')}"


def training_launcher(wildcards, resources):
    """`clumpcat`, or torchrun over `resources.gpu` processes (DDP) when that is above 1
    (rules train and train_experiment)."""
    if resources.gpu > 1:
        return (
            f"{shlex.quote(sys.executable)} -m torch.distributed.run --standalone "
            f"--nproc_per_node={resources.gpu} -m clumpcat"
        )
    return CLUMPCAT


#: The `weights:` key holding the pretrained ResNet50 of each set-up (paper Table 2).
WEIGHT_KEYS = {
    "imagenet": "imagenet",
    "imagenet-finetuned": "imagenet",
    "zoobot": "zoobot",
    "zoobot-finetuned": "zoobot",
    "zoobot-clumps": "zoobot_clumps",
}


def weights_option(setup):
    """`--backbone-weights FILE` for a set-up whose weights are configured."""
    key = WEIGHT_KEYS.get(setup)
    path = (config["weights"].get(key) if key else None) or classifier_weights_for(setup)
    return f"--backbone-weights {path}" if path else ""


def backbone_weights_option(wildcards):
    return weights_option(TRAINING_SETUP)


#: The training and detection settings of config.yaml as the stages' options.
TRAINING_OPTIONS = TrainingSettings.cli_args(config.get("training"))
#: Observing conditions of both synthetic samples (survey and training survey).
SIMULATE_OPTIONS = SimulateSettings.cli_args(config.get("simulate"))
DETECT_OPTIONS = DetectSettings.cli_args(config.get("detect"))


def catalogue_inputs(wildcards):
    """Every survey shard's tables, and the manifest of the shard folders."""
    inputs = {"shards": manifest("survey-shards")}
    for table in ("photometry", "status-photometry", "clumps"):
        inputs[table.replace("-", "_")] = all_shards("survey", f"{table}.parquet")
    return inputs


def truth_input(inputs):
    """The configured truth table, or the survey shards' truth tables (manifest)."""
    if config["truth"]:
        inputs["truth"] = config["truth"]
        return inputs
    return listed(inputs, "truth", "survey-truth.parquet")


def evaluation_inputs(wildcards):
    inputs = {"clumps": f"{RESULTS}/clumps.parquet"}
    truth_input(inputs)
    listed(inputs, "galaxies", "survey-galaxies.parquet")
    listed(inputs, "segments", "survey-segments.npz")
    if config["evaluate"]["baseline"]:
        listed(inputs, "baseline", "survey-baseline.parquet")
    if INJECT:
        for table in ("truth", "clumps", "photometry"):
            listed(inputs, f"injected_{table}", f"injected-{table}.parquet")
    return inputs


def evaluation_options(wildcards, input):
    options = [f"--cutouts {cutout_dir('survey')}"]
    for key in ("truth", "galaxies", "segments", "baseline", "injected_truth", "injected_clumps", "injected_photometry"):
        if key in input.keys():
            options.append(list_option(input, key))
    return " ".join(options)


def plot_inputs(wildcards):
    inputs = {
        "metrics": f"{RESULTS}/metrics.json",
        "summary": f"{RESULTS}/evaluation/summary.csv",
        "catalogue": f"{RESULTS}/catalogue.parquet",
        "clumps": f"{RESULTS}/clumps.parquet",
    }
    listed(inputs, "render", "survey-render.parquet")
    truth_input(inputs)
    if TRAIN:
        inputs["training"] = f"{RESULTS}/models/{TRAINING_SETUP}/metrics.csv"
    return inputs


def training_option(wildcards, input):
    return f"--training-metrics {input.training}" if "training" in input.keys() else ""


def plot_list_options(wildcards, input):
    return f"{list_option(input, 'render')} {list_option(input, 'truth')}"


def sfd_option(wildcards):
    sfd = config["photometry"]["sfd_dir"]
    return f"--ebv-source sfd --sfd-dir {sfd}" if sfd else "--ebv-source table"


FIGURES = ["completeness_purity", "flux_ratio", "conditions", "colour_colour", "gallery"]
if INJECT:
    FIGURES.append("selection_function")
if TRAIN:
    FIGURES.append("training_curves")


def output_folder(wildcards, output):
    """The folder of a rule's first output (a prefix the CLI writes into)."""
    return str(Path(output[0]).parent)


def output_folder_of_summary(wildcards, output):
    return str(Path(output.summary).parent)


def evaluation_folder(wildcards, input):
    return str(Path(input.summary).parent)


def experiment_weights_option(wildcards):
    return weights_option(wildcards.setup)


def experiment_options(wildcards):
    """The training settings with the run's set-up and the experiment's epochs."""
    section = dict(config.get("training") or {}, setup=wildcards.setup, epochs=config["experiment"]["epochs"])
    return TrainingSettings.cli_args(section)


def experiment_runs(wildcards):
    return [
        f"{RESULTS}/experiment/{setup}-{size}/test_metrics.json"
        for setup in config["experiment"]["setups"]
        for size in config["experiment"]["sizes"]
    ]


def experiment_run_dirs(wildcards):
    return [str(Path(path).parent) for path in experiment_runs(wildcards)]


def experiment_inputs(wildcards):
    """The manifest of the run folders (their metrics files are the rule's other input)."""
    return {"runs": manifest("experiment-runs")}


# ---- the Zoobot Clumps classifier (paper App. B; rules/classifier.smk) ----

from clumpcat.settings import ClassifierSettings

CLASSIFIER = config.get("classifier") or {}
CLASSIFIER_DIR = f"{RESULTS}/classifier"
CLASSIFIER_WEIGHTS = f"{CLASSIFIER_DIR}/encoder.pt"
CLASSIFIER_OPTIONS = ClassifierSettings.cli_args(CLASSIFIER)


def classifier_weights_for(setup):
    """The classifier's encoder for a zoobot-clumps set-up without weights.zoobot_clumps, else []."""
    if setup == "zoobot-clumps" and not config["weights"]["zoobot_clumps"]:
        return CLASSIFIER_WEIGHTS
    return []


def backbone_weights_input(wildcards):
    return classifier_weights_for(TRAINING_SETUP)


def experiment_backbone_input(wildcards):
    return classifier_weights_for(wildcards.setup)


def classifier_inputs(wildcards):
    """Renders of the training sample with its truth (or classifier.labels), and the initial weights."""
    inputs = listed({}, "render", f"{TRAIN_SAMPLE}-render.parquet")
    if CLASSIFIER.get("labels"):
        inputs["labels"] = CLASSIFIER["labels"]
    elif has_truth(TRAIN_SAMPLE):
        listed(inputs, "truth", f"{TRAIN_SAMPLE}-truth.parquet")
    else:
        raise ValueError(
            f"classifier.labels is null and the '{TRAIN_SAMPLE}' images have no synthetic truth: set "
            "classifier.labels to a table of objid and a clumpy column (0/1 or Clump Scout vote fraction)"
        )
    init = CLASSIFIER.get("init", "random")
    if init != "random":
        if not config["weights"][init]:
            raise ValueError(f"classifier.init is '{init}': set weights.{init} to the ResNet50 file")
        inputs["init_weights"] = config["weights"][init]
    return inputs


def classifier_input_options(wildcards, input):
    options = []
    for key in ("render", "truth", "labels", "init_weights"):
        if key in input.keys():
            options.append(list_option(input, key))
    return " ".join(options)
