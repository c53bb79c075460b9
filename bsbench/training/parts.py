"""A run's LightningModule and LightningDataModule, bsbench's or the user's (bsbench.core.parts): the
user's classes imported and checked, both built with the batch size set where Lightning's
BatchSizeFinder sets it, the input a user's module takes (for data=synthetic and the FLOP count),
and how many samples a batch holds."""

import functools
import inspect
import logging
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from lightning.fabric.utilities.apply_func import apply_to_collection
from lightning.pytorch.utilities.model_helpers import is_overridden
from omegaconf import DictConfig, OmegaConf

from bsbench.core import parts
from bsbench.core.errors import UserError, first_line
from bsbench.training.data import CIFAR10_CLASSES, ImageDataModule
from bsbench.training.model import ImageClassifier
from bsbench.training.synthetic import SyntheticInputs

# section: (the class the user's must be, its name, an example import path)
KINDS = {"model": (L.LightningModule, "LightningModule", "my_pkg.MyModule"),
         "data": (L.LightningDataModule, "LightningDataModule", "my_pkg.MyData")}
BATCH_SIZE = "batch_size"
HYDRA_KEYS = ("_partial_", "_convert_", "_recursive_", "_args_")  # instantiate's, besides _target_


def locate(path: str):
    """The object at an import path, as Hydra finds it (hydra.utils.get_object), without the three lines
    Hydra logs before it raises: the UserError that follows says it once."""
    logger = logging.getLogger("hydra.utils")
    disabled, logger.disabled = logger.disabled, True
    try:
        return get_object(path)
    finally:
        logger.disabled = disabled


def user_class(cfg: DictConfig, section: str) -> type:
    """The user's class named by `<section>._target_`, or a UserError saying what is wrong with the name."""
    base, kind, example = KINDS[section]
    path = parts.target(cfg, section)
    if path is None:
        raise UserError(f"{section}._target_ is not set; use {section}._target_=<the import path of your {kind}>, "
                        f"e.g. {section}._target_={example}.")
    try:
        found = locate(path)
    except Exception as exc:
        cause = exc.__cause__ or exc
        raise UserError(f"{section}._target_={path} cannot be imported ({first_line(cause)}); use the import path of "
                        f"your {kind}, e.g. {example}, with its package installed or on PYTHONPATH.") from None
    if not (isinstance(found, type) and issubclass(found, base)):
        what = f"a {found.__name__} class" if isinstance(found, type) else f"a {type(found).__name__}"
        raise UserError(f"{section}._target_={path} is {what}, not a {kind}; use the import path of a subclass of "
                        f"lightning.{'LightningModule' if section == 'model' else 'LightningDataModule'}.")
    return found


LOADER_ARGUMENTS = ("num_workers", "pin_memory", "persistent_workers", "prefetch_factor")


def loader_settings(cfg: DictConfig) -> dict:
    """The loader settings the run's datamodule takes, with the values it runs with (`data.<name>`: value):
    bsbench's own keys, or those among its constructor's arguments that the config sets or that have a
    default. mode=tune toggles them (bsbench.core.tuning.loader_knobs)."""
    if not parts.own(cfg, "data"):
        return {f"data.{name}": cfg.data[name] for name in LOADER_ARGUMENTS if name in cfg.data}
    found = {}
    for name, parameter in inspect.signature(user_class(cfg, "data")).parameters.items():
        if name not in LOADER_ARGUMENTS:
            continue
        value = cfg.data[name] if name in cfg.data else parameter.default
        if isinstance(value, (bool, int)) and value is not inspect.Parameter.empty:
            found[f"data.{name}"] = value
    return found


def _user_arguments(cfg: DictConfig, section: str, cls: type, batch_size: int) -> dict:
    """The user's constructor arguments: the section's keys, and the batch size where the constructor
    takes one; a key the constructor does not take is a UserError. Hydra's own keys (`_partial_`,
    `_convert_`, `_recursive_`, `_args_`) are kept for hydra.utils.instantiate, which builds it."""
    signature = inspect.signature(cls)
    kwargs = parts.arguments(cfg, section, signature.parameters)
    special = {key: kwargs.pop(key) for key in list(kwargs) if key in HYDRA_KEYS}
    if special.get("_partial_"):
        raise UserError(f"{section}._partial_=true would make a function that builds your {KINDS[section][1]}, not "
                        f"one; leave {section}._partial_ out (it is for nested keys, e.g. {section}.optimizer).")
    if BATCH_SIZE in kwargs:
        raise UserError(f"{section}.{BATCH_SIZE} is set by bsbench from batch_size (and swept with it); use "
                        f"batch_size={kwargs[BATCH_SIZE]} instead of {section}.{BATCH_SIZE}.")
    if BATCH_SIZE in signature.parameters:
        kwargs[BATCH_SIZE] = batch_size
    try:
        signature.bind(*special.get("_args_", ()), **kwargs)
    except TypeError as exc:
        raise UserError(f"{section}._target_={parts.target(cfg, section)} cannot be built from {section}'s keys "
                        f"({exc}); give its constructor's arguments as +{section}.<name>=<value>.") from None
    _check_targets(kwargs, section)
    return {**special, **kwargs}


def _check_targets(node, where: str) -> None:
    """Every nested `_target_` under a section (`model.net._target_`, `model.optimizer._target_`) can be
    imported: a UserError naming the first that cannot."""
    if isinstance(node, Mapping):
        if where.count(".") and parts.TARGET in node:
            try:
                locate(str(node[parts.TARGET]))
            except Exception as exc:
                cause = exc.__cause__ or exc
                raise UserError(f"{where}._target_={node[parts.TARGET]} cannot be imported ({first_line(cause)}); use "
                                "the import path of a class or function, with its package installed or on "
                                "PYTHONPATH.") from None
        for key, value in node.items():
            _check_targets(value, f"{where}.{key}")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _check_targets(value, f"{where}[{i}]")


def built_by_hydra(cfg: DictConfig, section: str, cls: type, batch_size: int):
    """The user's module or datamodule as Hydra builds a config (hydra.utils.instantiate: nested `_target_`
    built first, `_partial_`, `_args_`, `_recursive_`), its keys converted to plain containers unless it
    sets its own `_convert_`; an argument Hydra cannot build, in one line naming its key."""
    config = {parts.TARGET: parts.target(cfg, section), "_convert_": "all",
              **_user_arguments(cfg, section, cls, batch_size)}
    try:
        return instantiate(config)
    except InstantiationException as exc:
        text = str(exc)
        key = re.search(r"full_key: (\S+)", text)
        inner = exc.__cause__ or exc
        if key is None:  # the user's class itself raised: as it would have built outside Hydra
            raise (inner if isinstance(inner, Exception) else exc) from None
        what = f"{section}.{key.group(1)}"
        raise UserError(f"{what} could not be built ({first_line(inner) if inner is not exc else text.splitlines()[0]}); "
                        f"fix its keys ({what}.<name>=<value>) or its class.") from None


def make_module(cfg: DictConfig) -> L.LightningModule:
    """bsbench's classifier, or the user's module built from model's keys."""
    if not parts.own(cfg, "model"):
        return ImageClassifier(**cfg.model, image_size=cfg.data.get("image_size", 224), channels_last=cfg.channels_last)
    module = built_by_hydra(cfg, "model", user_class(cfg, "model"), cfg.batch_size)
    if cfg.channels_last:
        module.to(memory_format=torch.channels_last)
    if not is_overridden("predict_step", module, L.LightningModule):
        # Lightning's default predict_step passes the whole batch to forward; mode=inference times the
        # forward pass on the inputs, a batch's first element
        module.predict_step = types.MethodType(_forward_inputs, module)
    return module


def _forward_inputs(self, batch, batch_idx: int = 0, dataloader_idx: int = 0):
    return self(batch[0] if isinstance(batch, (list, tuple)) else batch)


def make_datamodule(cfg: DictConfig, predict_batches: int = 0) -> L.LightningDataModule:
    """The user's datamodule; for a module of the user's with data=synthetic and a known input,
    SyntheticInputs; else bsbench's images (CIFAR-10 or its synthetic stand-in)."""
    if parts.own(cfg, "data"):
        datamodule = built_by_hydra(cfg, "data", user_class(cfg, "data"), cfg.batch_size)
        if not is_overridden("predict_dataloader", datamodule, L.LightningDataModule):
            datamodule.predict_dataloader = types.MethodType(functools.partial(_cycled_batches, count=predict_batches),
                                                             datamodule)
        return datamodule
    if parts.own(cfg, "model") and cfg.data.name == "synthetic":
        spec = input_spec(cfg)
        if spec is not None:
            return SyntheticInputs(spec.shape, spec.dtype, spec.classes, cfg.batch_size, cfg.data.num_train_images,
                                   cfg.data.val_size, cfg.data.num_test_images, predict_batches, spec.high,
                                   cfg.channels_last)
    images = {key: value for key, value in cfg.data.items() if key != "shape"}
    return ImageDataModule(batch_size=cfg.batch_size, predict_batches=predict_batches, **images)


def train_samples(cfg: DictConfig) -> int | None:
    """How many training samples the run's data holds (the largest batch size worth searching), None
    where its dataset has no length."""
    datamodule = make_datamodule(cfg)
    if isinstance(datamodule, SyntheticInputs):
        return datamodule.sizes["train"]
    if parts.own(cfg, "data"):
        datamodule.prepare_data()
    datamodule.setup("fit")
    if isinstance(datamodule, ImageDataModule):
        return len(datamodule.train_set)
    try:
        return len(datamodule.train_dataloader().dataset)
    except TypeError:  # an IterableDataset
        return None


class CycledBatches:
    """`count` batches of a loader, starting it over where it ends (mode=inference with a user's
    datamodule that has no predict_dataloader: its test, else validation, else training batches)."""

    def __init__(self, loader, count: int):
        self.loader, self.count = loader, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        served = 0
        while served < self.count:
            empty = True
            for batch in self.loader:
                empty = False
                yield batch
                served += 1
                if served == self.count:
                    return
            if empty:
                return


def _cycled_batches(self, count: int):
    for stage, hook in (("test", "test_dataloader"), ("validate", "val_dataloader"), ("fit", "train_dataloader")):
        if is_overridden(hook, self, L.LightningDataModule):
            self.setup(stage)
            return CycledBatches(getattr(self, hook)(), count)
    raise UserError(f"data._target_={type(self).__name__} has no dataloader for mode=inference; give it a "
                    "predict_dataloader or test_dataloader.")


def holders(obj) -> list:
    """Where `obj` keeps a batch size, as Lightning's BatchSizeFinder looks for it: an attribute, or a
    key of its hparams."""
    found = [obj] if hasattr(obj, BATCH_SIZE) else []
    hparams = getattr(obj, "hparams", None)
    if hparams is not None and BATCH_SIZE in hparams:
        found.append(hparams)
    return found


def set_batch_size(objects, batch_size: int) -> int:
    """Set the batch size wherever the module and datamodule keep one (lightning_setattr's rule);
    returns how many places held it."""
    places = [place for obj in objects for place in holders(obj)]
    for place in places:
        if isinstance(place, Mapping):
            place[BATCH_SIZE] = batch_size
        else:
            setattr(place, BATCH_SIZE, batch_size)
    return len(places)


def samples_in(module, batch) -> int:
    """How many samples a batch holds: the module's `bsbench_batch_size(batch)` where it has one, else
    the first dimension of the batch's first tensor (so a short last batch or a collate that changes
    sizes is counted as it ran)."""
    hook = getattr(module, "bsbench_batch_size", None)
    if callable(hook):
        return int(hook(batch))
    tensor = _first_tensor(batch)
    if tensor is None or tensor.ndim == 0:
        raise UserError("a batch holds no tensor whose first dimension counts its samples; give your LightningModule "
                        "a bsbench_batch_size(self, batch) method that returns it.")
    return int(tensor.shape[0])


def on_meta(batch):
    """The batch's structure with each tensor replaced by an empty one of its shape and dtype on the
    meta device (for counting FLOPs: nothing kept, nothing allocated)."""
    with torch.inference_mode(False):  # a prediction's batch: a tensor a backward pass may use
        return apply_to_collection(batch, torch.Tensor, lambda t: torch.empty(t.shape, dtype=t.dtype, device="meta"))


def shapes(batch) -> str:
    """The batch's tensors' shapes and dtypes, as text."""
    found = []
    apply_to_collection(batch, torch.Tensor, lambda t: found.append(f"{tuple(t.shape)}:{t.dtype}"))
    return " ".join(found)


def _first_tensor(batch):
    if isinstance(batch, torch.Tensor):
        return batch
    items = batch.values() if isinstance(batch, Mapping) else batch if isinstance(batch, (list, tuple)) else ()
    for item in items:
        found = _first_tensor(item)
        if found is not None:
            return found
    return None


# --- what a module of the user's takes, found on the meta device (nothing allocated or computed) ---
@dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, ...]  # one sample's
    dtype: torch.dtype
    classes: int            # targets are below this
    high: int = 2           # integer inputs (token ids) are below this


def meta_module(cfg: DictConfig) -> L.LightningModule:
    """The run's module with its parameters on the meta device."""
    try:
        with torch.device("meta"):
            return make_module(cfg)
    except UserError:
        raise
    except Exception:  # a constructor that cannot run on the meta device (it reads a tensor's values)
        return make_module(cfg).to("meta")


def image_size(cfg: DictConfig) -> int | None:
    """The size of bsbench's images where the run trains on them; None for a datamodule of the user's,
    or a module of the user's on data=synthetic inputs shaped like its example_input_array or data.shape."""
    if parts.own(cfg, "data"):
        return None
    if parts.own(cfg, "model") and cfg.data.name == "synthetic":
        return None if input_spec(cfg) is not None else cfg.data.image_size
    return cfg.data.image_size


def input_spec(cfg: DictConfig) -> InputSpec | None:
    """The input a module of the user's takes on data=synthetic: data.shape (float32), else its
    example_input_array; None when neither says (bsbench's CIFAR-shaped images then)."""
    return _input_spec(parts_text(cfg))


def parts_text(cfg: DictConfig) -> str:
    """What the module and datamodule are built from, but the batch size, as text: a cache's key,
    which `from_text` reads back (with a batch size of 1)."""
    return OmegaConf.to_yaml({"model": OmegaConf.to_container(cfg.model, resolve=True),
                              "data": OmegaConf.to_container(cfg.data, resolve=True),
                              "channels_last": cfg.channels_last})


def from_text(text: str) -> DictConfig:
    return OmegaConf.merge(OmegaConf.create(text), {"batch_size": 1})


@functools.lru_cache(maxsize=8)
def _input_spec(text: str) -> InputSpec | None:
    cfg = from_text(text)
    module = meta_module(cfg)
    shape, dtype = (tuple(cfg.data.shape), torch.float32) if cfg.data.get("shape") else (None, None)
    example = getattr(module, "example_input_array", None)
    if shape is None:
        if example is None:
            return None
        if not isinstance(example, torch.Tensor):
            raise UserError(f"data=synthetic makes one input tensor per batch, and {parts.model_name(cfg)}'s "
                            f"example_input_array is a {type(example).__name__}; give data.shape=[...] (one float "
                            "input's shape) or use data=custom with your datamodule.")
        shape, dtype = tuple(example.shape[1:]), example.dtype
    hparams = getattr(module, "hparams", {}) or {}
    high = int(hparams.get("vocab_size") or 2)
    classes = hparams.get("num_classes")
    if classes is None:
        classes = _output_width(module, shape, dtype)
    return InputSpec(shape, dtype, int(classes), high)


def _output_width(module, shape, dtype) -> int:
    """The width of the module's output on a batch of two (meta): the number of classes a classifier has."""
    try:
        module.eval()
        with torch.no_grad():
            out = module(torch.zeros((2, *shape), dtype=dtype, device="meta"))
        module.train()
    except Exception as exc:
        raise UserError(f"data=synthetic could not run {type(module).__name__} on its input to find its "
                        f"number of classes ({first_line(exc)}); give your module a num_classes hyperparameter "
                        "(save_hyperparameters()) or use data=custom with your datamodule.") from None
    if not isinstance(out, torch.Tensor) or out.ndim < 2:
        raise UserError(f"data=synthetic makes class targets, and {type(module).__name__}'s output is not (batch, "
                        "classes) logits; give your module a num_classes hyperparameter, or use your datamodule.")
    return int(out.shape[-1])


def input_batch(cfg: DictConfig, size: int = 2, device: str = "meta"):
    """A batch as the run's data would hand it to the module, for counting FLOPs: (inputs, targets)."""
    if parts.own(cfg, "data"):
        return None
    spec = input_spec(cfg) if parts.own(cfg, "model") and cfg.data.name == "synthetic" else None
    if spec is None:
        image = cfg.data.image_size
        spec = InputSpec((3, image, image), torch.float32, cfg.model.get("num_classes") or CIFAR10_CLASSES)
    inputs = torch.zeros((size, *spec.shape), dtype=spec.dtype, device=device)
    return inputs, torch.zeros(size, dtype=torch.long, device=device)


# --- the checks made while a sweep is planned, before any job runs ---
def check(cfg: DictConfig) -> None:
    """A user's class that cannot be imported or built from its keys, or a module and datamodule
    that keep no batch size, is a UserError now rather than a failed job later."""
    if not (parts.own(cfg, "model") or parts.own(cfg, "data")):
        return
    for section in ("model", "data"):
        if parts.own(cfg, section):
            cls = user_class(cfg, section)
            _user_arguments(cfg, section, cls, cfg.batch_size)
    _check_built(parts_text(cfg))


@functools.lru_cache(maxsize=16)
def _check_built(text: str) -> None:
    cfg = from_text(text)
    module = _built(cfg, "model", lambda: meta_module(cfg))
    datamodule = _built(cfg, "data", lambda: make_datamodule(cfg))
    if not set_batch_size((module, datamodule), cfg.batch_size):
        names = " and ".join(f"{s}._target_={parts.target(cfg, s)}" for s in ("model", "data") if parts.own(cfg, s))
        raise UserError(f"{names} keep no batch size for bsbench to set (neither has a batch_size attribute or "
                        "hyperparameter, which is where Lightning's BatchSizeFinder sets it too); give your "
                        "LightningDataModule a batch_size argument stored as self.batch_size, and build its "
                        "DataLoaders with batch_size=self.batch_size.")
    if parts.own(cfg, "model") and not parts.own(cfg, "data") and not isinstance(datamodule, SyntheticInputs):
        _check_image_classes(cfg, module)


def _check_image_classes(cfg: DictConfig, module) -> None:
    """A module of the user's on bsbench's images (CIFAR-10, or data=synthetic without an example
    input): its output must have a logit for each of the 10 classes."""
    image = cfg.data.image_size
    width = _output_width(module, (3, image, image), torch.float32)
    if width < CIFAR10_CLASSES:
        source = "CIFAR-10's" if cfg.data.name == "cifar10" else "data=synthetic's CIFAR-shaped"
        raise UserError(f"model._target_={parts.target(cfg, 'model')} outputs {width} classes on {source} "
                        f"{image} px images, which have {CIFAR10_CLASSES}; give your module an example_input_array "
                        "(data=synthetic then makes inputs like it, with targets below its output's width), or "
                        "data=custom with your own datamodule.")

def _built(cfg: DictConfig, section: str, make):
    try:
        return make()
    except UserError:
        raise
    except Exception as exc:
        what = f"{section}._target_={parts.target(cfg, section)}" if parts.own(cfg, section) else f"{section}={section}"
        raise UserError(f"{what} could not be built ({first_line(exc)}); fix its constructor or the arguments "
                        f"given as {section}.<name>=<value>.") from None
