"""Settings are declared once: the schema, the CLI and config.yaml follow the dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import io
from pathlib import Path

import pytest
import yaml

from clumpcat import settings as S
from clumpcat.cli import build_parser
from clumpcat.errors import InputError

ROOT = Path(__file__).resolve().parents[1]

#: Stage subcommand -> the settings section its options come from.
STAGE_SETTINGS = {
    "train": S.TrainingSettings,
    "detect": S.DetectSettings,
    "postprocess": S.PostprocessSettings,
    "train-classifier": S.ClassifierSettings,
}


def test_committed_schema_is_generated_from_the_settings():
    stream = io.StringIO()
    S._write_schema(stream)
    committed = (ROOT / "workflow/schemas/config.schema.yaml").read_text()
    assert committed == stream.getvalue(), (
        "run: python -m clumpcat.settings > workflow/schemas/config.schema.yaml"
    )


def test_config_yaml_holds_the_declared_defaults():
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    for f in dataclasses.fields(S.RunSettings):
        assert config[f.name] == S.RunSettings._default(f), f.name
    for cls in S.SECTIONS:
        section = config.get(cls.section, {})
        defaults = dataclasses.asdict(cls())
        unknown = set(section) - set(defaults)
        assert not unknown, f"{cls.section}: {unknown}"
        for key, value in section.items():
            assert value == defaults[key], (
                f"config.yaml {cls.section}.{key}={value!r}, declared {defaults[key]!r}"
            )


@pytest.mark.parametrize("stage", sorted(STAGE_SETTINGS))
def test_stage_cli_options_follow_the_settings(stage):
    parser = build_parser([stage])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[stage]
    by_dest = {a.dest: a for a in sub._actions}
    cls = STAGE_SETTINGS[stage]
    for f, _hint in cls._fields(cli_only=True):
        action = by_dest[f.name]
        assert action.option_strings[0] == "--" + f.name.replace("_", "-")
        assert action.default == cls._default(f), f.name


def test_cli_args_round_trip_through_the_parser():
    section = {"epochs": 3, "lr": 0.002, "amp": False, "schedule": "constant", "setup": "imagenet"}
    words = S.TrainingSettings.cli_args(section).split()
    parser = argparse.ArgumentParser()
    S.TrainingSettings.add_options(parser)
    got = S.TrainingSettings.from_args(parser.parse_args(words))
    assert got == S.TrainingSettings(**section)


def test_bad_values_name_the_key_and_the_option():
    with pytest.raises(InputError, match=r"postprocess\.nms_iou \(--nms-iou\) must be <= 1, got 2"):
        S.PostprocessSettings(nms_iou=2)
    with pytest.raises(InputError, match=r"training\.device \(--device\) must be one of auto, cpu, cuda"):
        S.TrainingSettings(device="tpu")
    with pytest.raises(InputError, match=r"experiment\.sizes .* must be >= 3, got 2"):
        S.ExperimentSettings(sizes=[2, 100])
    with pytest.raises(InputError, match=r"config section 'detect' has unknown key\(s\) bogus"):
        S.DetectSettings.from_config({"bogus": 1})


def test_effective_config_fills_every_default_and_keeps_overrides():
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["postprocess"] = {"host_nsigma": 0.5}
    config.pop("detect")
    effective = S.effective_config(config)
    assert effective["postprocess"]["host_nsigma"] == 0.5
    assert effective["postprocess"]["nms_iou"] == 0.2
    assert effective["detect"] == dataclasses.asdict(S.DetectSettings())
