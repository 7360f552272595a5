"""Every config composes and loads; each default is stated once, in the schema; load() names the
bad key (the table of bad inputs is tests/test_validation.py)."""

from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from ntklab.config import Config, ConfigError, DataConfig, ModelConfig, NTKConfig, OptimConfig, load

from conftest import compose_config

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and any(p.glob("*.yaml")))
SCHEMAS = {"model": ModelConfig(), "data": DataConfig(), "optim": OptimConfig(), "ntk": NTKConfig()}


def group_options():
    for group in GROUPS:
        for path in sorted((CONF / group).glob("*.yaml")):
            yield group, path.stem


# What an option needs set on the command line (its ??? keys).
REQUIRED = {
    ("data", "csv"): ["data.path=data.csv"],
    ("data", "custom"): ["data._target_=mine.load"],
    ("model", "custom"): ["model._target_=mine.Net"],
}


def overrides_for(group, option):
    return [f"{group}={option}", *REQUIRED.get((group, option), [])]


@pytest.mark.parametrize("group, option", list(group_options()))
def test_every_config_composes_and_loads(group, option):
    with initialize_config_module(config_module="ntklab.conf", version_base="1.3"):
        cfg = compose(
            config_name="config", overrides=overrides_for(group, option), return_hydra_config=True
        )
        # ${hydra:...} interpolations (launcher presets) resolve against the composed hydra node
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        assert isinstance(load(cfg), Config)


@pytest.mark.parametrize("group", sorted(SCHEMAS))
def test_group_files_state_only_what_differs_from_the_schema(group):
    """A default stated in a group's YAML file as well as in the schema could drift apart."""
    defaults = {f.name: getattr(SCHEMAS[group], f.name) for f in fields(SCHEMAS[group])}
    for path in sorted((CONF / group).glob("*.yaml")):
        for key, value in (yaml.safe_load(path.read_text()) or {}).items():
            if key == "defaults":  # Hydra's defaults list (model=custom picks ntk=auto)
                continue
            assert key in defaults, (path.name, key)
            if key not in ("name", "method"):  # the option's identity
                assert value != defaults[key], f"{path.name}: {key}: {value} is the default"


def test_default_config_is_the_documented_experiment():
    cfg = load(compose_config())
    assert cfg.model.name == "leaky_relu" and cfg.data.name == "sphere"
    assert cfg.optim.name == "gd" and cfg.optim.lr == "auto"
    assert cfg.ntk.method == "structured" and cfg.ntk.every == 1
    assert cfg.device == "auto" and cfg.dtype == "float32"
    assert cfg.optim.batch_size is None and load(compose_config("optim=sgd")).optim.batch_size == 32


def test_load_types_the_config_and_names_the_bad_key():
    cfg = load(compose_config("optim.lr=0.5"))
    assert isinstance(cfg, Config) and cfg.optim.lr == 0.5
    with pytest.raises(ConfigError, match=r"model.width=0: must be a positive integer"):
        load(compose_config("model.width=0"))


def test_a_custom_model_takes_the_generic_route_unless_told():
    """model=custom has no closed form: it selects ntk=auto; the command line still wins."""
    custom = ("model=custom", "model._target_=mine.Net")
    assert load(compose_config(*custom)).ntk.method == "auto"
    assert load(compose_config(*custom, "ntk=jacobian")).ntk.method == "jacobian"
    assert load(compose_config("model=mlp")).ntk.method == "structured"


def test_extra_keys_are_a_custom_targets_keyword_arguments():
    cfg = load(compose_config("model=custom", "model._target_=mine.Net", "+model.hidden=64"))
    assert cfg.model.kwargs == {"hidden": 64} and not hasattr(cfg.model, "hidden")
    with pytest.raises(ConfigError, match=r"model.hidden=64: model=leaky_relu takes no such key"):
        load(compose_config("+model.hidden=64"))
