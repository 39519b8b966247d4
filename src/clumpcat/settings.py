"""Every setting of the pipeline, declared once.

Each section of ``config.yaml`` is a frozen dataclass below whose fields carry
the default, the type and a one-line doc. From that one declaration follow:

* the stage's command-line options (:meth:`Settings.add_options`, read back
  with :meth:`Settings.from_args`);
* the options a workflow rule passes to the stage (:meth:`Settings.cli_args`,
  from the run's configuration);
* the JSON schema of ``config.yaml`` (:func:`config_schema`; the file
  ``workflow/schemas/config.schema.yaml`` is written by ``python -m
  clumpcat.settings`` and a test holds it, the CLI and ``config.yaml`` to
  these classes).

Fields marked ``cli=False`` are read by the workflow only (sample sizes,
resources, input paths). This module imports no stage.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import shlex
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from clumpcat.constants import (
    HSC_MASK_PLANES,
    MERGE_FWHM,
    NMS_IOU,
    SCORE_THRESHOLD,
)
from clumpcat.errors import InputError

__all__ = [
    "setting",
    "Settings",
    "RunSettings",
    "SimulateSettings",
    "RenderSettings",
    "TrainingSettings",
    "WeightsSettings",
    "DetectSettings",
    "PostprocessSettings",
    "PhotometrySettings",
    "CatalogueSettings",
    "EvaluateSettings",
    "ExperimentSettings",
    "FetchSettings",
    "HscSettings",
    "CrossmatchSettings",
    "ClassifierSettings",
    "SECTIONS",
    "config_schema",
    "effective_config",
]

#: Detector set-ups (paper Table 2, plus a small CPU preset); model.SETUPS holds the same names.
SETUP_NAMES: tuple[str, ...] = (
    "cpu-small",
    "imagenet",
    "imagenet-finetuned",
    "zoobot",
    "zoobot-finetuned",
    "zoobot-clumps",
)
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def setting(
    default: Any,
    doc: str,
    *,
    cli: bool = True,
    choices: tuple | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
    item_choices: tuple | None = None,
    item_minimum: float | None = None,
) -> Any:
    """Declare one setting: a dataclass field with its doc and its limits.

    Parameters
    ----------
    default
        The default value (lists are copied per instance).
    doc : str
        One line: what the setting does (and its paper section).
    cli : bool
        Whether the stage's command line has an option for it.
    choices, minimum, maximum, exclusive_minimum
        Limits checked when the settings are made and written to the schema.
    item_choices, item_minimum
        Limits of each item of a list setting.
    """
    meta = {
        "doc": doc,
        "cli": cli,
        "choices": choices,
        "minimum": minimum,
        "maximum": maximum,
        "exclusive_minimum": exclusive_minimum,
        "item_choices": item_choices,
        "item_minimum": item_minimum,
    }
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(hint) -> tuple[type, bool, bool]:
    """(scalar type, nullable, is_list) of a field's annotation."""
    nullable = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(hint))
        hint = args[0]
        origin = typing.get_origin(hint)
    if origin is list:
        return typing.get_args(hint)[0], nullable, True
    return hint, nullable, False


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


class Settings:
    """Base of every settings section; subclasses are frozen dataclasses."""

    #: Key of the section in config.yaml.
    section: ClassVar[str]
    #: One line describing the section (the schema's description).
    description: ClassVar[str]

    # -- introspection -----------------------------------------------------

    @classmethod
    def _fields(cls, *, cli_only: bool = False):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if cli_only and not f.metadata["cli"]:
                continue
            yield f, hints[f.name]

    @classmethod
    def _default(cls, f: dataclasses.Field):
        return f.default_factory() if f.default is dataclasses.MISSING else f.default

    def __post_init__(self) -> None:
        problems = []
        for f, hint in self._fields():
            value = getattr(self, f.name)
            problem = self._check(f, hint, value)
            if problem:
                problems.append(f"{self.section}.{f.name} ({_option(f.name)}) {problem}")
        if problems:
            raise InputError("invalid settings: " + "; ".join(problems))

    @staticmethod
    def _check(f: dataclasses.Field, hint, value) -> str | None:
        base, nullable, is_list = _base_type(hint)
        m = f.metadata
        if value is None:
            return None if nullable else "must be set, got null"
        values = value if is_list else [value]
        if is_list and not isinstance(value, list | tuple):
            return f"must be a list, got {value!r}"
        for v in values:
            if base is float and isinstance(v, int | float) and not isinstance(v, bool):
                continue
            if not isinstance(v, base) or (base is int and isinstance(v, bool)):
                return f"must be of type {base.__name__}, got {v!r}"
        choices = m["item_choices"] if is_list else m["choices"]
        minimum = m["item_minimum"] if is_list else m["minimum"]
        for v in values:
            if choices is not None and v not in choices:
                return f"must be one of {', '.join(map(str, choices))}, got {v!r}"
            if minimum is not None and v < minimum:
                return f"must be >= {minimum}, got {v!r}"
            if m["maximum"] is not None and v > m["maximum"]:
                return f"must be <= {m['maximum']}, got {v!r}"
            if m["exclusive_minimum"] is not None and v <= m["exclusive_minimum"]:
                return f"must be > {m['exclusive_minimum']}, got {v!r}"
        return None

    # -- command line --------------------------------------------------------

    @classmethod
    def add_options(cls, parser: argparse.ArgumentParser) -> None:
        """Add one ``--option`` per command-line setting, defaults from the declaration."""
        group = parser.add_argument_group(f"{cls.section} settings (config.yaml '{cls.section}:')")
        for f, hint in cls._fields(cli_only=True):
            base, _nullable, is_list = _base_type(hint)
            default = cls._default(f)
            kwargs: dict[str, Any] = {
                "default": default,
                "dest": f.name,
                "help": f"{f.metadata['doc']} (default {default})",
            }
            if base is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                kwargs["type"] = base
                if is_list:
                    kwargs["nargs"] = "+"
                if f.metadata["choices"] is not None:
                    kwargs["choices"] = f.metadata["choices"]
            group.add_argument(_option(f.name), **kwargs)

    @classmethod
    def from_args(cls, args: argparse.Namespace):
        """The settings given on the command line (checked)."""
        return cls(**{f.name: getattr(args, f.name) for f, _ in cls._fields(cli_only=True)})

    def cli_values(self) -> dict[str, Any]:
        """The command-line settings as keyword arguments of the stage function."""
        return {f.name: getattr(self, f.name) for f, _ in self._fields(cli_only=True)}

    @classmethod
    def from_config(cls, section: Mapping | None):
        """The settings of a config.yaml section (unknown keys are an error)."""
        section = dict(section or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise InputError(
                f"config section '{cls.section}' has unknown key(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**section)

    @classmethod
    def cli_args(cls, section: Mapping | None) -> str:
        """The command-line options that give a stage this config section's settings.

        Every command-line setting is passed (the default where the section
        lacks it), so a rule's command always says what ran.
        """
        values = dataclasses.asdict(cls.from_config(section))
        words: list[str] = []
        for f, hint in cls._fields(cli_only=True):
            value = values[f.name]
            base, _nullable, is_list = _base_type(hint)
            if value is None:
                continue
            if base is bool:
                words.append(_option(f.name) if value else "--no-" + f.name.replace("_", "-"))
            elif is_list:
                words += [_option(f.name), *map(str, value)]
            else:
                words += [_option(f.name), str(value)]
        return shlex.join(words)

    # -- schema ----------------------------------------------------------------

    @classmethod
    def json_schema(cls) -> dict:
        """This section as a JSON-schema object (draft 2020-12)."""
        properties = {}
        for f, hint in cls._fields():
            properties[f.name] = _field_schema(f, hint, cls._default(f))
        return {
            "type": "object",
            "description": cls.description,
            "default": {},
            "additionalProperties": False,
            "properties": properties,
        }


def _field_schema(f: dataclasses.Field, hint, default) -> dict:
    base, nullable, is_list = _base_type(hint)
    m = f.metadata
    limits = {}
    for key, name in (
        ("minimum", "minimum"),
        ("maximum", "maximum"),
        ("exclusive_minimum", "exclusiveMinimum"),
    ):
        if m[key] is not None:
            limits[name] = m[key]
    if is_list:
        item: dict[str, Any] = {"type": _JSON_TYPES[base]}
        if m["item_choices"] is not None:
            item["enum"] = list(m["item_choices"])
        if m["item_minimum"] is not None:
            item["minimum"] = m["item_minimum"]
        schema: dict[str, Any] = {"type": ["array", "null"] if nullable else "array", "items": item}
    else:
        schema = {"type": [_JSON_TYPES[base], "null"] if nullable else _JSON_TYPES[base]}
        if m["choices"] is not None:
            schema["enum"] = list(m["choices"]) + ([None] if nullable else [])
        schema.update(limits)
    schema["default"] = default
    schema["description"] = m["doc"]
    return schema


# ---------------------------------------------------------------------------
# The sections, in the order of the flow.


@dataclass(frozen=True)
class RunSettings(Settings):
    """Top-level keys: what to run on and where to write."""

    section: ClassVar[str] = ""
    description: ClassVar[str] = "clumpcat workflow configuration (config.yaml)"

    results: str = setting("results", "Output folder of the run.", cli=False)
    survey: str = setting(
        "synthetic",
        "Survey of the images; picks the bands, the fetcher and the RGB rendering "
        "(Lupton for SDSS/synthetic, asinh for HSC).",
        cli=False,
        choices=("synthetic", "sdss", "hsc"),
    )
    galaxies: str | None = setting(
        None, "Galaxy table (Parquet or CSV); null generates the synthetic survey.", cli=False
    )
    cutouts: str | None = setting(
        None,
        "Folder of {objid}.fits cutouts in the contract's layout; null simulates or fetches them.",
        cli=False,
    )
    model: str | None = setting(None, "Trained detector checkpoint; null trains one.", cli=False)
    truth: str | None = setting(
        None, "Truth table (injected sources or labels in the cutout frame) for evaluation.", cli=False
    )
    shard_size: int = setting(
        500,
        "Galaxies per job (DESIGN.md: a few hundred to a few thousand). Every job pays a few "
        "CPU-seconds to start Python and its libraries (torch for detect), so small shards cost "
        "time: cutouts to catalogue on 2 cores ran 7.1-7.9 galaxies/s with 500, 5.4-6.7 with 250 "
        "(benchmarks/bench_workflow.py).",
        cli=False,
        minimum=1,
    )
    shard_threads: int | None = setting(
        None,
        "Cores of a per-galaxy shard job (segment, photometry, inject, baseline): its galaxies are "
        "measured in as many processes (the output does not depend on it). null: on a laptop, "
        "--cores shared out among "
        "the sample's shards (1-8 each: a one-shard survey on 2 cores gets 2, four shards 1 each, "
        "run side by side, which spares each job's serial start-up a second core); on a cluster, 2. "
        "Snakemake gives a job at most --cores; on a cluster it is the CPUs each such job asks for.",
        cli=False,
        minimum=1,
    )


@dataclass(frozen=True)
class SimulateSettings(Settings):
    section: ClassVar[str] = "simulate"
    description: ClassVar[str] = "The synthetic survey the catalogue is made from."

    n_galaxies: int = setting(240, "Number of galaxies.", cli=False, minimum=1)
    seed: int = setting(20240601, "Random seed; the same seed gives the same files.", cli=False)
    conditions: str = setting(
        "varied",
        "Observing conditions of the synthetic survey and training survey: 'varied' draws sky noise "
        "(x0.6-2.2 of SDSS, some x0.3 coadds), seeing (0.9-2.2\") and PSF shape per galaxy; 'nominal' "
        'is one SDSS condition (x1 noise, Moffat beta 4.765, seeing 1.0-1.8").',
        choices=("varied", "nominal"),
    )
    sky_noise_scale: float | None = setting(
        None,
        "Sky noise in units of SDSS's; null draws it per galaxy (below 0.6: a deep coadd).",
        exclusive_minimum=0,
    )
    # The names of clumpcat.survey.psf.PSF_FAMILIES (this module imports no stage).
    psf_family: str | None = setting(
        None,
        "PSF shape of every galaxy; null draws it per galaxy (its parameters are drawn either way).",
        choices=("gaussian", "moffat", "double_gaussian"),
    )


@dataclass(frozen=True)
class RenderSettings(Settings):
    section: ClassVar[str] = "render"
    description: ClassVar[str] = "RGB PNGs (App. A); detection renders from the cutouts itself."

    png: str = setting(
        "gallery",
        "Which galaxies get a PNG: gallery (the training sample all, the survey the gallery's first "
        "galaxies, the injected sample none) or all (every sample, e.g. for volunteers' eyes).",
        cli=False,
        choices=("gallery", "all"),
    )


@dataclass(frozen=True)
class TrainingSettings(Settings):
    section: ClassVar[str] = "training"
    description: ClassVar[str] = "Training of the detector when no model is given (paper 4.2)."

    setup: str = setting(
        "cpu-small", "Detector set-up (paper Table 2, plus a small CPU preset).", choices=SETUP_NAMES
    )
    n_galaxies: int = setting(960, "Galaxies in the synthetic training survey.", cli=False, minimum=10)
    seed: int = setting(7, "Seed of the training survey, the split and the optimiser.")
    epochs: int = setting(14, "Training epochs (the paper used 120, 4.2).", minimum=1)
    batch_size: int = setting(4, "Images per batch and per GPU.", minimum=1)
    lr: float | None = setting(
        None,
        "Adam learning rate; null: 1e-4 (paper 4.2) for the ResNet50 set-ups, 1e-3 for cpu-small "
        "(trained from scratch).",
        exclusive_minimum=0,
    )
    weight_decay: float = setting(5.0e-5, "Adam weight decay (released code).", minimum=0)
    schedule: str | None = setting(
        None,
        "Learning rate after the warm-up; null: cosine for cpu-small, constant (the paper) otherwise.",
        choices=("constant", "cosine"),
    )
    jitter: int = setting(
        60,
        "Largest random shift in px of the training crop from the image centre (so the nucleus is "
        "not learned as 'the bright point at the crop centre').",
        minimum=0,
    )
    labels: str | None = setting(
        None, "Clump Scout style label table; null uses the synthetic truth.", cli=False
    )
    device: str = setting("auto", "Training device.", choices=DEVICES)
    num_workers: int = setting(0, "DataLoader worker processes.", minimum=0)
    amp: bool = setting(True, "bfloat16 autocast and channels-last on CUDA.")
    gpus: int = setting(
        1, "GPUs asked for on a cluster; more than one trains with DDP under torchrun.", cli=False, minimum=0
    )
    cpu_processes: int | None = setting(
        None,
        "Data-parallel processes when training on a CPU (DDP over Gloo, one machine): the batch is "
        "split between them and the job's threads shared out, so the model sees the same batches; "
        "null: as many as the threads allow with at least 2 images each (2 for a batch of 4 on 2 or "
        "more threads). Two single-threaded processes train 1.2x faster than one with 2 threads.",
        minimum=1,
    )


@dataclass(frozen=True)
class WeightsSettings(Settings):
    section: ClassVar[str] = "weights"
    description: ClassVar[str] = "Local weight files for the pretrained backbones (paper Table 2)."

    imagenet: str | None = setting(None, "torchvision ResNet50 ImageNet state dict.", cli=False)
    zoobot: str | None = setting(None, "Zoobot ResNet50 encoder (timm format).", cli=False)
    zoobot_clumps: str | None = setting(None, "Zoobot Clumps ResNet50 encoder (App. B).", cli=False)
    paper: str | None = setting(
        None,
        "A detector released with the paper (nn.DataParallel state dict); used as `model` when set "
        "and `model` is null.",
        cli=False,
    )


@dataclass(frozen=True)
class DetectSettings(Settings):
    section: ClassVar[str] = "detect"
    description: ClassVar[str] = "Batched inference."

    batch_size: int = setting(8, "Images per batch.", minimum=1)
    device: str = setting("auto", "Inference device.", choices=DEVICES)
    threads: int | None = setting(
        None,
        "CPU threads of an inference job (the rule's threads). null: on a laptop, --cores shared out "
        "among the sample's shards (1-8; as many shards as cores: one thread each, since a second "
        "thread speeds the forward pass only 1.4x while two one-thread jobs run 2x); on a cluster, 1. "
        "Scores and boxes differ between thread counts by rounding (1e-5 px).",
        cli=False,
        minimum=1,
    )
    num_workers: int = setting(0, "DataLoader worker processes reading the images.", minimum=0)
    score_floor: float = setting(
        0.05, "Lowest score kept; the catalogue cut comes later.", minimum=0, maximum=1
    )
    amp: bool = setting(True, "bfloat16 autocast and channels-last on CUDA.")
    render_on: str = setting(
        "auto",
        "Where detect renders the cutouts: device (torch, on the GPU), loader (numpy and Pillow in "
        "the DataLoader workers) or auto (device on CUDA, loader on a CPU, where Pillow is faster).",
        choices=("auto", "device", "loader"),
    )


@dataclass(frozen=True)
class PostprocessSettings(Settings):
    section: ClassVar[str] = "postprocess"
    description: ClassVar[str] = "NMS, merging and the host mask (paper 4.3)."

    nms_iou: float = setting(
        NMS_IOU, "NMS IoU threshold across labels (4.3.1).", exclusive_minimum=0, maximum=1
    )
    merge_fwhm: float = setting(MERGE_FWHM, "Merge radius in r-band PSF FWHM (4.3.2).", minimum=0)
    linkage: str = setting(
        "seed",
        "How candidates within the merge radius are grouped: seed (around the highest scores first, "
        "so a later score cut keeps the same clumps) or components (friends-of-friends).",
        choices=("seed", "components"),
    )
    host_mask: bool = setting(True, "Drop candidates outside the host galaxy segment (4.3.2).")
    # The paper's 0.5 x RMS (4.3.2, HOST_MASK_NSIGMA) cuts ~10% of the synthetic clumps in
    # faint outer discs (README, measured); 0.25 keeps them.
    host_nsigma: float = setting(
        0.25,
        "Host segment threshold in units of the r-band background RMS, on the PSF-smoothed image "
        "(4.3.2 used 0.5; 0.25 keeps the faint outer disc).",
        minimum=0,
    )
    # Measured on simulated surveys at x1, x1.6 and x2.2 sky noise
    # (benchmarks/bench_snr_cut.py, README): S/N 3 keeps >99% of the clumps
    # with u-band flux ratio >= 3% and rejects most empty-sky positions.
    min_snr: float = setting(
        3.0,
        "Drop candidates whose own detection S/N (g, r, i apertures in quadrature) is below this; 0 keeps all.",
        minimum=0,
    )


@dataclass(frozen=True)
class PhotometrySettings(Settings):
    section: ClassVar[str] = "photometry"
    description: ClassVar[str] = "Aperture photometry (App. E)."

    aperture_correction: str = setting(
        "moffat",
        "Analytic PSF of the aperture correction where a cutout has no PSF image: moffat "
        "(beta 4.765, SDSS-like wings) or gaussian (the paper, App. E).",
        choices=("gaussian", "moffat"),
    )
    background: str = setting(
        "auto",
        "Background under the clump: auto (joint where the cutout carries the band's PSF image, quadratic "
        "with the analytic fallback), joint (a quadratic host surface fitted together with the clump's PSF "
        "to the aperture and the annulus: unbiased on curved hosts and half the noise of a quadratic from "
        "the annulus alone, benchmarks/bench_photometry.py), or from the annulus alone: median (the paper, "
        "App. E), mean, plane, radial or quadratic.",
        choices=("auto", "median", "mean", "plane", "radial", "quadratic", "joint"),
    )
    psf_width_err_image: float = setting(
        0.003,
        "Fractional PSF-width uncertainty in the flux errors where the cutout has a PSF image: a "
        "survey PSF model's (HSC size residual ~0.3% in T, Mandelbaum et al. 2018; SDSS KL PSF, "
        "Stoughton et al. 2002) plus its change across the cutout.",
        minimum=0,
        maximum=0.5,
    )
    psf_width_err_analytic: float = setting(
        0.02,
        "The same for the analytic fallback (no PSF image): one FWHM per band, which varies by up to "
        "15% across an SDSS CCD (Stoughton et al. 2002, Sect. 4.3).",
        minimum=0,
        maximum=0.5,
    )
    # The detector's centres are off by a fraction of a FWHM (README: measured);
    # an aperture off centre reads a point source low.
    recentre: bool = setting(
        True,
        "Refine each clump's centre by a PSF fit in the reference band (r) before the apertures are "
        "placed, the same centre in every band; false measures at the detector's centres.",
    )
    sfd_dir: str | None = setting(
        None, "Folder with the SFD maps; null uses the galaxy table's ebv.", cli=False
    )


@dataclass(frozen=True)
class CatalogueSettings(Settings):
    section: ClassVar[str] = "catalogue"
    description: ClassVar[str] = "The released catalogue."

    score_threshold: float = setting(
        SCORE_THRESHOLD,
        "Lowest detection score in the catalogue (clumps.parquet keeps all); the released code's 0.3.",
        minimum=0,
        maximum=1,
    )


@dataclass(frozen=True)
class EvaluateSettings(Settings):
    section: ClassVar[str] = "evaluate"
    description: ClassVar[str] = "Evaluation against truth (paper 4.4, App. F)."

    enabled: bool = setting(True, "Evaluate when truth is available.", cli=False)
    baseline: bool = setting(True, "Run the classical peak-finder baseline too.", cli=False)
    injection: bool = setting(
        True, "Injection-recovery selection function on the run's own cutouts.", cli=False
    )
    inject_per_galaxy: int = setting(3, "Clumps injected per galaxy.", cli=False, minimum=1)
    inject_seed: int = setting(11, "Seed of the injection.", cli=False)


@dataclass(frozen=True)
class ExperimentSettings(Settings):
    section: ClassVar[str] = "experiment"
    description: ClassVar[str] = (
        "The `experiment` target (paper App. C) comparing set-ups over training-set sizes."
    )

    setups: list[str] = setting(
        ["cpu-small"],
        "Set-ups to compare (the pretrained ones need their weights under `weights`).",
        cli=False,
        item_choices=SETUP_NAMES,
    )
    sizes: list[int] = setting(
        [100, 200, 400],
        "Images per run-group (each split 70/20/10), drawn from the training sample.",
        cli=False,
        item_minimum=3,
    )
    epochs: int = setting(8, "Epochs per run (the paper used 120).", cli=False, minimum=1)


@dataclass(frozen=True)
class FetchSettings(Settings):
    section: ClassVar[str] = "fetch"
    description: ClassVar[str] = "Survey access for survey=sdss and survey=hsc."

    sas_root: str = setting(
        "https://data.sdss.org/sas",
        "SDSS Science Archive Server URL or a local mirror folder with the SAS layout.",
        cli=False,
    )
    cache: str | None = setting(
        None,
        "Download cache shared by all shards (frames downloaded once); null uses {results}/cache.",
        cli=False,
    )
    max_parallel: int = setting(4, "Requests in flight at once per job.", cli=False, minimum=1)
    retries: int = setting(
        5, "Retries per request on timeouts, 429 and 5xx (never on other 4xx).", cli=False, minimum=0
    )
    timeout_s: float = setting(60, "Connect and read timeout in seconds.", cli=False, exclusive_minimum=0)
    backoff_s: float = setting(
        1.0,
        "First retry delay in seconds, doubled at each retry; Retry-After wins when longer.",
        cli=False,
        minimum=0,
    )
    skyserver_url: str | None = setting(
        "https://skyserver.sdss.org/dr17/SkyServerWS/SearchTools/SqlSearch",
        "SkyServer SQL endpoint for galaxies without run/camcol/field or petro_r90_r; null fails them instead.",
        cli=False,
    )
    max_outside: float = setting(
        0.5,
        "Largest fraction of an SDSS cutout outside its frame (NaN-padded and flagged); beyond it the galaxy fails.",
        cli=False,
        minimum=0,
        maximum=1,
    )
    on_network_error: str = setting(
        "fail",
        "When a host stays unreachable: fail the job (a rerun fetches only what is missing) or record "
        "the galaxies as failed.",
        cli=False,
        choices=("fail", "record"),
    )


@dataclass(frozen=True)
class HscSettings(Settings):
    section: ClassVar[str] = "hsc"
    description: ClassVar[str] = (
        "HSC-SSP PDR3 Data Access Service (survey=hsc). Credentials come only from environment "
        "variables or ~/.netrc."
    )

    das_url: str = setting(
        "https://hsc-release.mtk.nao.ac.jp/das_cutout/pdr3/cgi-bin/cutout", "DAS cutout endpoint.", cli=False
    )
    psf_url: str | None = setting(
        "https://hsc-release.mtk.nao.ac.jp/psf/pdr3/cgi/getpsf",
        "DAS PSF picker endpoint; null requires psf_fwhm_{g,r,i,z,y} in the galaxy table.",
        cli=False,
    )
    rerun: str = setting("pdr3_wide", "PDR3 rerun: pdr3_wide or pdr3_dud.", cli=False)
    username_env: str = setting(
        "HSC_SSP_CAS_USERNAME", "Environment variable holding the DAS user name.", cli=False
    )
    password_env: str = setting(
        "HSC_SSP_CAS_PASSWORD", "Environment variable holding the DAS password.", cli=False
    )
    mask_planes: list[str] = setting(
        list(HSC_MASK_PLANES),
        "HSC mask planes (MP_* bits of the DAS MASK) whose pixels become NaN with inverse variance 0.",
        cli=False,
    )


@dataclass(frozen=True)
class CrossmatchSettings(Settings):
    section: ClassVar[str] = "crossmatch"
    description: ClassVar[str] = "Reruns over a new HSC object table (Section 5.2); the `crossmatch` target."

    hsc_objects: str | None = setting(
        None, "New HSC object table (object_id, ra, dec); null disables the target.", cli=False
    )
    galaxies: str | None = setting(
        None,
        "Parent galaxy table matched against the HSC objects; null uses `galaxies` (for an HSC run whose "
        "`galaxies` is this target's output, give the parent table here).",
        cli=False,
    )
    radius_arcsec: float = setting(1.0, "Match radius in arcsec.", cli=False, exclusive_minimum=0)
    processed: list[str] | None = setting(
        None,
        "Earlier ledgers/catalogues whose galaxies are left out; null uses {results}/ledger.parquet and "
        "{results}/release/ledger.parquet, the ledgers this results folder's catalogue and release write "
        "(plus the history {results}/crossmatch/processed.parquet).",
        cli=False,
    )
    out: str | None = setting(
        None,
        "Galaxy table of the new matches; null writes {results}/crossmatch/hsc-galaxies.parquet.",
        cli=False,
    )


@dataclass(frozen=True)
class ClassifierSettings(Settings):
    section: ClassVar[str] = "classifier"
    description: ClassVar[str] = (
        "The `zoobot_clumps` target (paper App. B): a clumpy / not-clumpy classifier whose encoder "
        "becomes the zoobot-clumps detector's backbone when weights.zoobot_clumps is null."
    )

    encoder: str = setting(
        "cpu-small",
        "Encoder body: resnet50 (App. B; a GPU) or cpu-small (the cpu-small detector's body, for CPUs).",
        choices=("cpu-small", "resnet50"),
    )
    init: str = setting(
        "random",
        "Initial encoder weights: zoobot (App. B) or imagenet (resnet50 only; from `weights`), or random.",
        choices=("random", "zoobot", "imagenet"),
    )
    labels: str | None = setting(
        None,
        "Table of objid and a clumpy column (0/1 or vote fraction); null labels the synthetic truth.",
        cli=False,
    )
    label_column: str = setting(
        "clumpy", "Column of the label table holding 0/1 or the clumpy vote fraction."
    )
    vote_threshold: float = setting(
        0.5,
        "A galaxy is clumpy when its label column is >= this (0/1 labels: any value in (0, 1]).",
        exclusive_minimum=0,
        maximum=1,
    )
    min_flux_ratio: float = setting(
        0.05,
        "Synthetic truth: clumpy when a clump has u-band clump/host flux ratio >= this (between the "
        "3% and 8% GSFC thresholds of Section 4.4.3).",
        minimum=0,
    )
    image_size: int | None = setting(
        None,
        "Network input side in px of the 200-px central crop; null: the detector's scale "
        "(200 for cpu-small, 400 for resnet50).",
        minimum=32,
    )
    epochs: int = setting(12, "Training epochs (App. B: 100).", minimum=1)
    batch_size: int = setting(16, "Images per batch (App. B: 32).", minimum=2)
    lr: float | None = setting(
        None,
        "Adam learning rate; null: 1e-3 for cpu-small (from scratch), 1e-4 for resnet50 (fine-tuning).",
        exclusive_minimum=0,
    )
    weight_decay: float = setting(5.0e-5, "Adam weight decay.", minimum=0)
    seed: int = setting(7, "Seed of the split, the initial weights and the augmentation.")
    device: str = setting("auto", "Training device.", choices=DEVICES)
    num_workers: int = setting(0, "DataLoader worker processes.", minimum=0)
    amp: bool = setting(True, "bfloat16 autocast and channels-last on CUDA.")


#: Every config.yaml section, in the order of the flow.
SECTIONS: tuple[type[Settings], ...] = (
    SimulateSettings,
    RenderSettings,
    TrainingSettings,
    WeightsSettings,
    DetectSettings,
    PostprocessSettings,
    PhotometrySettings,
    CatalogueSettings,
    EvaluateSettings,
    ExperimentSettings,
    FetchSettings,
    HscSettings,
    CrossmatchSettings,
    ClassifierSettings,
)


def config_schema() -> dict:
    """The JSON schema of config.yaml, made from the settings classes."""
    schema = RunSettings.json_schema()
    schema.pop("default")
    out = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    for cls in SECTIONS:
        out["properties"][cls.section] = cls.json_schema()
    out["required"] = ["results", "survey", "shard_size"]
    return out


def effective_config(config: Mapping) -> dict:
    """The configuration that runs: every section checked, every default filled in.

    Parameters
    ----------
    config : mapping
        A config.yaml mapping with any ``--config`` overrides applied.

    Returns
    -------
    dict
        Plain values, suitable for JSON (provenance).
    """
    top = {f.name: config.get(f.name, RunSettings._default(f)) for f in dataclasses.fields(RunSettings)}
    out = dataclasses.asdict(RunSettings(**top))
    for cls in SECTIONS:
        out[cls.section] = dataclasses.asdict(cls.from_config(config.get(cls.section)))
    return out


def _write_schema(stream) -> None:
    import yaml

    stream.write(
        "# Generated from src/clumpcat/settings.py by `python -m clumpcat.settings`: edit the settings\n"
        "# classes, not this file (a test checks that the two agree).\n"
    )
    yaml.safe_dump(config_schema(), stream, sort_keys=False, width=120, allow_unicode=True)


if __name__ == "__main__":  # pragma: no cover - maintenance command
    _write_schema(sys.stdout)
