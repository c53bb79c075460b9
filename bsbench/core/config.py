"""The type of every setting, declared once. Hydra composes conf/ as YAML, which types nothing:
`compile=maybe` would arrive as a string that Python takes for true. bsbench merges each composed
config into this schema before anything runs (`typed`), so a wrong type is refused in one line and
`compile=no` means false. Stdlib and OmegaConf only: Hydra's plugin and the report import it cheaply.

Keys whose values are unions OmegaConf cannot type (`devices`: an int, `auto` or a list; several
Trainer flags) are `Any` here. Each key's range (`repeats` at least 1) is bsbench.core.ranges', checked
here too; what needs more than the config to check (a precision Lightning has, a batch size the data
set can fill) is bsbench.job.validate's."""

import dataclasses
import difflib
import functools
import math
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from bsbench.core.errors import UserError
from bsbench.core.ranges import check_ranges


@dataclass
class Data:
    name: str = "cifar10"
    root: Optional[str] = "data"
    download: bool = True
    verify: bool = True
    val_size: int = 5000
    split_seed: int = 42
    image_size: int = 224
    resize_size: Optional[int] = None
    resize_on: str = "device"
    num_workers: int = 0  # conf/data/cifar10.yaml: 0 with resize_on=device, 3 with cpu
    pin_memory: bool = True
    persistent_workers: bool = False
    num_train_images: int = 50000  # data=synthetic only
    num_test_images: int = 10000
    shape: Optional[List[int]] = None  # data=synthetic with a module of your own: one input's shape


@dataclass
class Model:
    arch: str = "mobilenet_v3_large"
    num_classes: int = 10
    lr: float = 5e-4
    fused_adam: bool = False
    train_acc_eval_forward: bool = False
    log_train_loss: bool = True


@dataclass
class Trainer:
    """Every lightning.pytorch.Trainer argument that bsbench does not set from its own keys."""

    num_nodes: int = 1
    fast_dev_run: Any = False
    max_epochs: Optional[int] = None
    min_epochs: Optional[int] = None
    max_steps: int = -1
    min_steps: Optional[int] = None
    max_time: Any = None
    limit_train_batches: Any = None
    limit_val_batches: Any = None
    limit_test_batches: Any = None
    limit_predict_batches: Any = None
    overfit_batches: Any = 0.0
    val_check_interval: Any = None
    check_val_every_n_epoch: Optional[int] = 1
    num_sanity_val_steps: Optional[int] = None
    log_every_n_steps: Optional[int] = None
    enable_checkpointing: Optional[bool] = None
    enable_progress_bar: Optional[bool] = None
    enable_model_summary: Optional[bool] = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: Optional[float] = None
    gradient_clip_algorithm: Optional[str] = None
    deterministic: Any = None
    inference_mode: bool = True
    use_distributed_sampler: bool = True
    profiler: Any = None
    detect_anomaly: bool = False
    barebones: bool = False
    plugins: Any = None
    sync_batchnorm: bool = False
    reload_dataloaders_every_n_epochs: int = 0
    default_root_dir: Optional[str] = None
    enable_autolog_hparams: bool = True
    model_registry: Optional[str] = None


@dataclass
class Timing:
    warmup_steps: int = 20


@dataclass
class Telemetry:
    interval_s: float = 1.0
    required: bool = False


@dataclass
class FindMax:
    max_val: int = 8192
    max_trials: int = 25


@dataclass
class Compare:
    batch_sizes: List[int] = field(default_factory=list)
    settings: List[Dict[str, Any]] = field(default_factory=list)
    rounds: int = 200
    warmup_steps: int = 2
    steps: int = 5


@dataclass
class Tune:
    max_batch_size: Optional[int] = None
    effective_batch: Optional[int] = None
    compile: bool = False
    objective: str = "time"
    grid_points: int = 5


@dataclass
class Inference:
    batches: int = 50


@dataclass
class Profile:
    warmup: int = 2
    active: int = 5
    repeat: int = 1
    top: int = 15


@dataclass
class Ddp:
    gradient_as_bucket_view: bool = False
    static_graph: bool = False
    bucket_cap_mb: Optional[int] = None


DDP_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Ddp)}  # torch's own


@dataclass
class Mfu:
    peak_tflops: Optional[float] = None


@dataclass
class Config:
    batch_size: int = 256
    precision: str = "16-mixed"
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    ddp: Ddp = field(default_factory=Ddp)
    epochs: int = 10
    seed: int = 123
    mode: str = "train"
    channels_last: bool = False
    cudnn_benchmark: bool = False
    compile: bool = False
    matmul_precision: Optional[str] = None
    repeats: int = 1
    order: str = "interleaved"
    order_seed: int = 0
    cooldown_s: float = 0.0
    repeat: int = 0
    target_ci: Optional[float] = None
    budget_min: Optional[float] = None
    compare: Compare = field(default_factory=Compare)
    timing: Timing = field(default_factory=Timing)
    telemetry: Telemetry = field(default_factory=Telemetry)
    find_max: FindMax = field(default_factory=FindMax)
    inference: Inference = field(default_factory=Inference)
    tune: Tune = field(default_factory=Tune)
    profile: Profile = field(default_factory=Profile)
    mfu: Mfu = field(default_factory=Mfu)
    callbacks: Dict[str, Any] = field(default_factory=dict)
    resume: Optional[str] = None
    output_root: str = "outputs"
    verbose: bool = False
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    trainer: Trainer = field(default_factory=Trainer)
    logger: Optional[Dict[str, Any]] = None


# model and data name classes of the user's (Hydra's `_target_`): their keys are the user's
# constructor arguments, which no schema here can know (bsbench.core.parts)
OPEN_SECTIONS = ("model", "data")


@functools.lru_cache(maxsize=None)
def schema(open_sections: tuple[str, ...] = ()) -> type:
    """Config, with the sections in `open_sections` taking any keys."""
    if not open_sections:
        return Config
    return dataclasses.make_dataclass("Config", [(name, Dict[str, Any], field(default_factory=dict))
                                                 for name in open_sections], bases=(Config,))


def typed(cfg: DictConfig) -> DictConfig:
    """The config merged into the schema: values converted to their types (`no` -> false), or a
    UserError naming the first setting that has none. Hydra's own section, where present, is left
    out (it is Hydra's to check). A model or data section with a `_target_` (a class of the user's)
    keeps its keys as they are."""
    plain = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]) if "hydra" in cfg else cfg
    _check_settings_are_mappings(plain)
    own = tuple(name for name in OPEN_SECTIONS
                if isinstance(plain.get(name), DictConfig) and "_target_" in plain[name].keys())
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema(own)), plain)
    except ConfigKeyError as exc:
        raise UserError(unknown_setting(str(exc.full_key))) from None
    except OmegaConfBaseException as exc:
        raise UserError(type_error(str(exc.full_key), exc.value)) from None
    values = OmegaConf.to_container(merged, resolve=False)
    _check_finite(values, skip=own)
    _check_interpolations(merged, values)
    in_range(merged)
    return merged


def in_range(cfg: DictConfig) -> None:
    """A UserError naming the first setting outside its range (bsbench.core.ranges); a model or data
    section with a `_target_` (a class of the user's) takes its own keys."""
    own = tuple(name for name in OPEN_SECTIONS if isinstance(cfg.get(name), DictConfig) and "_target_" in cfg[name])
    check_ranges(functools.partial(_value, cfg), skip=own)


def _value(cfg: DictConfig, key: str):
    """A setting's value as the run will see it (interpolations resolved), or None where it is null or
    cannot be resolved outside a run (`${hydra:runtime.output_dir}`)."""
    try:
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
    except OmegaConfBaseException:
        return None
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _check_settings_are_mappings(cfg: DictConfig) -> None:
    """compare.settings is a list of mappings (OmegaConf's own error on `[16,32]` names neither the key nor
    what would do)."""
    node = OmegaConf.select(cfg, "compare.settings", default=None)
    if OmegaConf.is_list(node):
        for i, item in enumerate(node):
            if not OmegaConf.is_dict(item):
                raise UserError(f"compare.settings[{i}]={item} is not a setting, the keys it changes as a mapping; use "
                                "e.g. compare.settings=[{channels_last:false},{channels_last:true}], or "
                                "compare.batch_sizes=[...] to compare batch sizes.")


_ABSENT = object()


def _check_interpolations(cfg: DictConfig, values, key: str = "") -> None:
    """Every plain interpolation (`${paths.data_dir}`) names a key the config has: a config group of the user's
    written for a project with other sections is refused in one line, not in Hydra's traceback at the
    first job. Resolvers (`${hydra:...}`, `${now:...}`) and relative keys are Hydra's."""
    if isinstance(values, dict):
        for name, value in values.items():
            _check_interpolations(cfg, value, f"{key}.{name}" if key else str(name))
    elif isinstance(values, list):
        for i, value in enumerate(values):
            _check_interpolations(cfg, value, f"{key}[{i}]")
    elif isinstance(values, str) and "${" in values:
        for name in re.findall(r"\$\{([A-Za-z_][\w.-]*)\}", values):
            if OmegaConf.select(cfg, name, default=_ABSENT) is _ABSENT:
                raise UserError(f"{key}={values} interpolates ${{{name}}}, which bsbench's configuration does not "
                                f"have; give {key} its value on the command line ({key}=<value>) or in your config.")


def node_of(cfg: DictConfig, key: str):
    """(the container holding `key` (`a.b.c`), its last name, the node there or None): what setting a
    value in place, and putting it back as it was (raw, interpolations kept), needs."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    return parent, leaf, parent._get_node(leaf) if isinstance(parent, DictConfig) else None


def _check_finite(values, key: str = "", skip: tuple[str, ...] = ()) -> None:
    """No setting holds NaN or an infinity (`cooldown_s=nan` would pass every range check: every
    comparison with NaN is false). A class of the user's gets its keys as given (`skip`)."""
    if isinstance(values, dict):
        for name, value in values.items():
            if not key and name in skip:
                continue
            _check_finite(value, f"{key}.{name}" if key else str(name))
    elif isinstance(values, list):
        for i, value in enumerate(values):
            _check_finite(value, f"{key}[{i}]")
    elif isinstance(values, float) and not math.isfinite(values):
        _, default = _schema_field(key)
        example = f"e.g. {key}={default:g}" if isinstance(default, (int, float)) and not isinstance(default, bool) \
            else "a finite number" + (f" or {key}=null" if default is None else "")
        raise UserError(f"{key}={values} is not a finite number; use {example}.")


def setting_names(cls=Config, prefix: str = "") -> list[str]:
    """Every setting's dotted name, from the schema."""
    names = []
    for f in dataclasses.fields(cls):
        kind = typing.get_type_hints(cls)[f.name]
        names.append(prefix + f.name)
        if dataclasses.is_dataclass(kind):
            names += setting_names(kind, f"{prefix}{f.name}.")
    return names


def unknown_setting(key: str) -> str:
    """The sentence for a key that is not a setting, with the closest setting's name where one is close."""
    close = difflib.get_close_matches(key, setting_names(), n=1, cutoff=0.75)
    if close:
        return f"{key} is not a bsbench setting; did you mean {close[0]}?"
    return f"{key} is not a bsbench setting; `python -m bsbench --cfg job` lists them all."


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_LIST_EXAMPLES = {"compare.batch_sizes": "[511,512,513]",  # the list settings
                  "compare.settings": "[{channels_last:false},{channels_last:true}]"}


def type_error(key: str, value) -> str:
    item = re.fullmatch(r"(.+)\[\d+\]", key)  # an element of a list: compare.batch_sizes[0]
    if item:
        kind, _ = _schema_field(item.group(1))
        if typing.get_origin(kind) is list:
            wanted = _TYPE_NAMES.get(typing.get_args(kind)[0], "a value of the right type")
            return (f"{item.group(1)} holds {value}, which is not {wanted}; use e.g. "
                    f"{item.group(1)}={_LIST_EXAMPLES.get(item.group(1), '[...]')}.")
    kind, default = _schema_field(key)
    if typing.get_origin(kind) is list:
        return f"{key}={value} is not a list; use e.g. {key}={_LIST_EXAMPLES.get(key, '[...]')}."
    nullable = typing.get_origin(kind) is typing.Union
    base = typing.get_args(kind)[0] if nullable else kind
    wanted = _TYPE_NAMES.get(base, "a value of the right type")
    if base is bool:
        return f"{key}={value} is not {wanted}; use {key}=true or {key}=false."
    if default is None:
        return f"{key}={value} is not {wanted}; use {wanted}" + (f" or {key}=null." if nullable else ".")
    return f"{key}={value} is not {wanted}; use e.g. {key}={default}."


def _schema_field(key: str):
    """The declared type and default of a dotted key."""
    cls, kind, default = Config, Config, None
    for part in key.split("."):
        fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        if part not in fields:
            return Any, None
        f = fields[part]
        kind = typing.get_type_hints(cls)[part]
        default = f.default if f.default is not dataclasses.MISSING else None
        cls = kind
    return kind, default
