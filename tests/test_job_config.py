"""Job configuration: defaults < config file < command-line flags; unknown keys and bad values fail clearly."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from scaleup.job_config import ConfigError, config_to_dict, parse_config


@dataclass(frozen=True)
class _Job:
    model: str = "runwayml/stable-diffusion-v1-5"
    steps: int = 20
    guidance: float = 7.5
    attribute: Literal["gender", "race"] = "gender"
    lora: Optional[str] = None
    target: tuple[float, ...] = (0.5, 0.5)
    use_ema: bool = False
    lr: float = field(default=5e-5, metadata={"help": "AdamW learning rate"})


def test_defaults_then_file_then_flags(tmp_path):
    cfg_file = tmp_path / "job.yaml"
    cfg_file.write_text("steps: 30\nguidance: 5.0\ntarget: [0.75, 0.25]\nuse_ema: true\n", encoding="utf-8")
    cfg = parse_config(_Job, ["--config", str(cfg_file), "--steps", "12", "--attribute", "race"])
    assert cfg == _Job(steps=12, guidance=5.0, attribute="race", target=(0.75, 0.25), use_ema=True)


def test_json_file_and_list_flag(tmp_path):
    cfg_file = tmp_path / "job.json"
    cfg_file.write_text(json.dumps({"lora": "/w/lora"}), encoding="utf-8")
    cfg = parse_config(_Job, ["--config", str(cfg_file), "--target", "0.2,0.8", "--lora", "none"])
    assert cfg.lora is None and cfg.target == (0.2, 0.8)
    assert config_to_dict(cfg)["target"] == [0.2, 0.8]


@pytest.mark.parametrize("text, message", [("stpes: 3\n", "unknown config key.*stpes"),
                                           ("steps: 2.5\n", "steps = 2.5 is not an integer"),
                                           ("attribute: age\n", "attribute = 'age' is not one of"),
                                           ("- a\n- b\n", "one mapping"),
                                           ("steps: [\n", "not valid YAML"),
                                           ("steps: 3\nguidance: 2\nsteps: 30\n",
                                            r"sets 'steps' twice \(lines 1 and 3\); keep one")])
def test_bad_config_files_fail_naming_the_key(tmp_path, text, message):
    cfg_file = tmp_path / "job.yaml"
    cfg_file.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        parse_config(_Job, ["--config", str(cfg_file)])


def test_a_json_key_set_twice_is_refused(tmp_path):
    cfg_file = tmp_path / "job.json"
    cfg_file.write_text('{"steps": 3, "lr": 1e-4, "steps": 30}', encoding="utf-8")
    with pytest.raises(ConfigError, match="sets 'steps' twice; keep one"):
        parse_config(_Job, ["--config", str(cfg_file)])


def test_bad_flag_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="use_ema = 'maybe' is not a boolean"):
        parse_config(_Job, ["--use-ema", "maybe"])
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config(_Job, ["--config", str(tmp_path / "missing.yaml")])


def test_booleans_are_plain_switches_and_help_lists_the_choices(capsys):
    """Issue 19: booleans as plain switches, and ``--help`` listing the choices."""
    assert parse_config(_Job, ["--use-ema"]).use_ema is True
    assert parse_config(_Job, ["--use-ema", "--steps", "3"]) == _Job(use_ema=True, steps=3)
    assert parse_config(_Job, ["--use-ema", "false"]).use_ema is False
    assert parse_config(_Job, []).use_ema is False
    with pytest.raises(SystemExit):
        parse_config(_Job, ["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--use-ema [true|false]" in shown and "one of gender, race (default: gender)" in shown


def test_popalign_takes_the_adft_jobs_names_of_the_same_settings():
    """Issue 19: flag names consistent between the two jobs (--output-dir / --out, --pretrained-model / --pipeline)."""
    from scaleup.jobs.popalign.config import TrainConfig

    a = parse_config(TrainConfig, ["--data", "d", "--output-dir", "o", "--pretrained-model", "p"])
    b = parse_config(TrainConfig, ["--data", "d", "--out", "o", "--pipeline", "p"])
    assert a == b and a.out == "o" and a.pipeline == "p"
