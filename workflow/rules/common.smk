# Configuration, validation and input functions; no rules here.
import math
from pathlib import Path

from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

RESULTS = config["results"].rstrip("/")
SURVEY = config["survey"]
SHARD_SIZE = config["shard_size"]
SYNTHETIC = config["galaxies"] is None
if SYNTHETIC and SURVEY != "synthetic":
    raise ValueError(
        f"'survey' is '{SURVEY}' but no 'galaxies' table is given: real surveys need "
        "--config galaxies=TABLE (only survey=synthetic simulates its own galaxies)"
    )
TRAIN = config["model"] is None
TRAINING_SETUP = config["training"]["setup"]
MODEL = config["model"] or f"{RESULTS}/models/{TRAINING_SETUP}/model.pt"
EVALUATE = config["evaluate"]["enabled"] and (SYNTHETIC or config["truth"] is not None)
INJECT = EVALUATE and config["evaluate"]["injection"]
ENV = "../../envs/clumpcat.yaml"
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


N_SURVEY = config["simulate"]["n_galaxies"] if SYNTHETIC else count_galaxies(config["galaxies"])
SAMPLES = {"survey": N_SURVEY}
if TRAIN and config["training"]["labels"] is None:
    SAMPLES["training"] = config["training"]["n_galaxies"]
if INJECT:
    SAMPLES["injected"] = N_SURVEY
SHARDS = {sample: shard_ids(n) for sample, n in SAMPLES.items()}
TRAIN_SAMPLE = "training" if "training" in SAMPLES else "survey"


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


def shards_of(name):
    """Input function: the table `name` of every shard of the rule's sample."""

    def shard_tables(wildcards):
        return all_shards(wildcards.sample, name)

    return shard_tables


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


def status_option(wildcards, input):
    """`--status-in FILE` when the previous step wrote a status table."""
    return f"--status-in {input.status}" if input.get("status") else ""


def truth_option(wildcards, input):
    return f"--truth {input.truth}" if input.get("truth") else ""
