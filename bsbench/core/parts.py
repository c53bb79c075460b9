"""Whose model and data a run trains: bsbench's own (`model.arch`: a torchvision or timm classifier
in bsbench's LightningModule; `data.name`: CIFAR-10 or its synthetic stand-in) or classes of the
user's, named as Hydra names any class: `model._target_=my_pkg.MyModule`, `data._target_=my_pkg.MyData`,
their constructor arguments as the section's other keys. Stdlib and OmegaConf only: the sweeper, the
identity and the report read it without importing torch."""

import dataclasses

from omegaconf import DictConfig, OmegaConf

from bsbench.core.config import Data, Model

TARGET = "_target_"
# bsbench's own keys, which its presets and modes set under model and data (experiment=smoke's
# data.image_size, mode=throughput's model.log_train_loss): they reach a user's class only where its
# constructor names them
BSBENCH_KEYS = {"model": tuple(f.name for f in dataclasses.fields(Model)),
                "data": tuple(f.name for f in dataclasses.fields(Data))}


def own(cfg: DictConfig, section: str) -> bool:
    """The section names a class of the user's."""
    node = cfg.get(section)
    return isinstance(node, DictConfig) and TARGET in node.keys()  # `in node` is false while it is ???


def target(cfg: DictConfig, section: str) -> str | None:
    """The import path of the user's class (None for bsbench's own, or where it is not set yet)."""
    node = cfg[section]
    return None if not own(cfg, section) or OmegaConf.is_missing(node, TARGET) else str(node[TARGET])


def arguments(cfg: DictConfig, section: str, parameters=()) -> dict:
    """The keyword arguments the user's class is built with: the section's keys less `_target_`, and
    less bsbench's own keys that are not among the constructor's named `parameters`."""
    values = OmegaConf.to_container(cfg[section], resolve=True)
    return {key: value for key, value in values.items()
            if key != TARGET and (key not in BSBENCH_KEYS[section] or key in parameters)}


def model_name(cfg: DictConfig) -> str:
    """The model as a result names it: model.arch, or the user's class."""
    return target(cfg, "model") if own(cfg, "model") else cfg.model.arch


def data_name(cfg: DictConfig) -> str:
    return target(cfg, "data") if own(cfg, "data") else cfg.data.name


def builds_optimizer(cfg: DictConfig) -> bool:
    """bsbench's module builds the optimizer (so model.fused_adam is a setting); a user's module builds its own."""
    return not own(cfg, "model")
