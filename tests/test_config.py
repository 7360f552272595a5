"""Every config composes and validates; validate() names the bad key (the CLI table of bad
inputs is tests/test_validation.py)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from ntklab.config import ConfigError, register_configs, validate

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and any(p.glob("*.yaml")))


def group_options():
    for group in GROUPS:
        for path in sorted((CONF / group).glob("*.yaml")):
            yield group, path.stem


@pytest.fixture(scope="module", autouse=True)
def _schemas():
    register_configs()


def overrides_for(group, option):
    extra = ["data.path=data.csv"] if (group, option) == ("data", "csv") else []
    if group == "hydra":
        return []
    return [f"{group}={option}", *extra]


@pytest.mark.parametrize("group, option", list(group_options()))
def test_every_config_composes_and_validates(group, option):
    with initialize_config_module(config_module="ntklab.conf", version_base="1.3"):
        cfg = compose(
            config_name="config", overrides=overrides_for(group, option), return_hydra_config=True
        )
        # ${hydra:...} interpolations (launcher presets) resolve against the composed hydra node
        HydraConfig.instance().set_config(cfg)
        job = cfg.copy()
        with open_dict(job):
            del job["hydra"]
        OmegaConf.to_container(job, resolve=True)
        validate(job)


def test_default_config_is_the_documented_experiment():
    with initialize_config_module(config_module="ntklab.conf", version_base="1.3"):
        cfg = compose(config_name="config")
    assert cfg.model.name == "leaky_relu" and cfg.data.name == "sphere"
    assert cfg.optim.name == "gd" and cfg.optim.lr == "auto"
    assert cfg.ntk.method == "structured" and cfg.ntk.every == 1
    assert cfg.device == "auto" and cfg.dtype == "float32"


def test_validate_names_the_key():
    with initialize_config_module(config_module="ntklab.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["model.width=0"])
    with pytest.raises(ConfigError, match=r"model.width=0: must be a positive integer"):
        validate(cfg)
