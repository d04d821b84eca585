"""Config errors fail before any work, naming the file, line or key, and the valid choices."""

from __future__ import annotations

import pytest

from contrastlib.config import load_config
from contrastlib.config.build import method_config
from contrastlib.errors import ConfigError
from contrastlib.methods.simcse import SimCSEMode


def yaml_file(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_quickstart_config_loads():
    cfg = load_config("simcse-snli")
    assert cfg.method["name"] == "simcse" and method_config(cfg.method)[1].mode is SimCSEMode.supervised
    assert cfg.data.train.endswith("datasets/nli/snli-dev.tsv")  # ${bundled:...} resolved


def test_overrides_are_typed():
    cfg = load_config("simcse-snli", ["trainer.max_steps=5", "loss.temperature=0.1", "method.mode=unsupervised"])
    assert cfg.trainer.max_steps == 5 and cfg.loss["temperature"] == 0.1
    assert method_config(cfg.method)[1].mode is SimCSEMode.unsupervised


def test_misspelt_yaml_key_names_file_line_and_suggestion(tmp_path):
    p = yaml_file(tmp_path, "data:\n  train: x.tsv\ntrainer:\n  max_epoch: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(p)
    msg = str(info.value)
    assert msg.startswith(f"{p}:4: unknown key 'trainer.max_epoch'")
    assert "did you mean 'max_epochs'" in msg and "valid keys here:" in msg


def test_unknown_top_level_key(tmp_path):
    p = yaml_file(tmp_path, "data:\n  train: x.tsv\nlearning_rate: 1\n")
    with pytest.raises(ConfigError, match=r":3: unknown key 'learning_rate'"):
        load_config(p)


def test_wrong_type_names_the_key(tmp_path):
    p = yaml_file(tmp_path, "data:\n  train: x.tsv\n  batch_size: many\n")
    with pytest.raises(ConfigError, match=r"c.yaml:3: data.batch_size"):
        load_config(p)


def test_bad_override():
    with pytest.raises(ConfigError, match="override trainer.max_stepz: unknown key 'trainer.max_stepz'"):
        load_config("simcse-snli", ["trainer.max_stepz=3"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config("simcse-snli", ["trainer.max_steps"])


def test_unknown_component_lists_choices():
    with pytest.raises(ConfigError) as info:
        load_config("simcse-snli", ["loss.name=infonce"])
    msg = str(info.value)
    assert msg.startswith("override loss.name: unknown loss 'infonce'; valid choices: ")
    assert "info_nce" in msg and "supcon" in msg and "mv_dhel" in msg
    assert "did you mean 'info_nce'" in msg
    with pytest.raises(ConfigError, match="method.name: unknown method"):
        load_config("simcse-snli", ["method.name=simclr2"])
    with pytest.raises(ConfigError, match="model.pooling: unknown pooling 'avg'"):
        load_config("simcse-snli", ["model.pooling=avg"])


def test_enumerated_values():
    with pytest.raises(ConfigError, match="trainer.precision: invalid value 'bf16'; valid choices: auto, 32-true"):
        load_config("simcse-snli", ["trainer.precision=bf16"])
    with pytest.raises(ConfigError, match="method.mode"):
        load_config("simcse-snli", ["method.mode=semi"])
    with pytest.raises(ConfigError, match="loss.temperature: must be > 0"):
        load_config("simcse-snli", ["loss.temperature=0"])


def test_missing_required_value(tmp_path):
    with pytest.raises(ConfigError, match="missing value for 'data.train'"):
        load_config(yaml_file(tmp_path, "name: x\n"))


def test_invalid_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"c.yaml:\d+: invalid YAML"):
        load_config(yaml_file(tmp_path, "data:\n  train: [x\n"))
    with pytest.raises(ConfigError, match="no such config file, and not a recipe"):
        load_config(tmp_path / "none.yaml")


def test_every_registered_loss_is_selectable_in_the_simcse_config():
    from contrastlib.config.build import build_loss
    from contrastlib.registry import LOSSES

    for name in LOSSES.names():
        cfg = load_config("simcse-snli", [f"loss.name={name}", "loss.temperature=null"])
        loss = build_loss(cfg.loss, num_samples=100)
        assert isinstance(loss, LOSSES.get(name))


def test_loss_parameters_are_checked_against_the_chosen_loss():
    cfg = load_config(
        "simcse-snli",
        ["loss.name=debiased", "loss.tau_plus=0.05", "loss.beta=1.0", "loss.temperature=0.2"],
    )
    from contrastlib.config.build import build_loss

    loss = build_loss(cfg.loss, num_samples=10)
    assert (loss.tau_plus, loss.beta, loss.temperature()) == (0.05, 1.0, 0.2)
    with pytest.raises(ConfigError, match=r"override loss.sigma: not a parameter of loss 'info_nce'; it takes: temperature"):
        load_config("simcse-snli", ["loss.sigma=0.5"])
    with pytest.raises(ConfigError, match="loss.chunk_size: must be >= 1|chunk_size must be >= 1"):
        build_loss(load_config("simcse-snli", ["loss.chunk_size=0"]).loss, num_samples=1)
