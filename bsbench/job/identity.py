"""What a job is, whatever the command that asked for it: its typed config, resolved, less the
sweep-control keys (bsbench.core.fields.SWEEP_CONTROL) and less every value Hydra derives from the
job's own directory (`${hydra:runtime.output_dir}`: the logger's and the Trainer's directories),
which would make the identity depend on the folder that is named after it. A resumed sweep matches
jobs by this content, never by folder name or command text: `batch_size=30,31` and `batch_size=31,30
cooldown_s=30` are the same jobs, `trainer.max_steps=100` is another."""

import hashlib
import json
import re

from omegaconf import DictConfig, OmegaConf

from bsbench.core.config import DDP_DEFAULTS, node_of
from bsbench.core.fields import MODE_SECTIONS, SWEEP_CONTROL, flatten, without
from bsbench.modes import mode_of


def identity(cfg: DictConfig) -> dict:
    """The job's flattened, resolved config, less sweep control and what comes from its directory."""
    return Template(cfg).identity(cfg, ())


def job_id(cfg: DictConfig) -> str:
    return _hashed(identity(cfg))


class Template:
    """A config's identity, kept to give the identities of configs that differ from it only in the
    plain values of some keys (a sweep's 500 batch sizes, bsbench.job.sweep.typed_jobs) without
    resolving each whole config again (two walks of the tree, most of a job id's cost)."""

    def __init__(self, cfg: DictConfig):
        unresolved = flatten(OmegaConf.to_container(cfg, resolve=False))
        interpolations = [value for value in unresolved.values() if isinstance(value, str) and "${" in value]
        self.from_directory = [key for key, value in unresolved.items()
                               if isinstance(value, str) and "${hydra:" in value]
        self.resolved = flatten(_resolved_without(cfg, self.from_directory))
        # every name an interpolation mentions (its keys' parts, relative or not, and its resolvers')
        self.read = {name for text in interpolations for name in re.findall(r"[A-Za-z_][\w-]*", text)}

    def identity(self, cfg: DictConfig, changed) -> dict | None:
        """The identity of `cfg`, this template's config with the keys `changed` (`a.b`) set to other
        plain values; None where that cannot be told from the template (an interpolation may read a
        changed key, a value is one, or replaces one of Hydra's) and the config must be resolved whole."""
        resolved = self.resolved
        if changed:
            values = {}
            for key in changed:
                node = node_of(cfg, key)[2]
                if key not in resolved or key in self.from_directory or node is None or node._is_interpolation() \
                        or not self.read.isdisjoint(key.split(".")):
                    return None
                values[key] = node._value()
            resolved = {**resolved, **values}
        return without(resolved, (*SWEEP_CONTROL, "hydra", *self.from_directory, *_unused(cfg)))

    def job_id(self, cfg: DictConfig, changed) -> str:
        """job_id(cfg), from this template where it can be."""
        found = self.identity(cfg, changed)
        return job_id(cfg) if found is None else _hashed(found)


class JobIds:
    """The job ids of the configs bsbench.job.sweep.typed_jobs yields, each from the template of the
    first config of its kind where it can be: `ids(cfg, changed)`."""

    def __init__(self):
        self._templates: dict[int, Template] = {}  # by the first config, which typed_jobs keeps alive

    def __call__(self, cfg: DictConfig, changed: tuple[str, ...] | None) -> str:
        if changed is None:  # a config of its own
            return job_id(cfg)
        template = self._templates.get(id(cfg)) if changed else None
        if template is None:
            template = self._templates[id(cfg)] = Template(cfg)
        return template.job_id(cfg, changed)


def _unused(cfg: DictConfig) -> tuple[str, ...]:
    """The keys of the config that are not part of what its job is."""
    mode = mode_of(cfg.get("mode"))
    unused = mode.unused(cfg)  # mode=compare of compare.batch_sizes: its batch_size is not what it runs
    # a mode's own section is part of that mode's jobs only (a throughput job is the same job whatever
    # profile.active says, and job ids from before these sections existed stay what they were)
    unused += tuple(section for section in MODE_SECTIONS if section not in mode.sections)
    if not cfg.compare.get("settings"):  # job ids from before compare.settings existed stay what they were
        unused += ("compare.settings",)
    if cfg.data.get("shape", None) is None:  # and from before data.shape existed
        unused += ("data.shape",)
    if cfg.tune.get("effective_batch", None) is None:  # and tunes from before tune.effective_batch existed
        unused += ("tune.effective_batch",)
    # and jobs from before the ddp settings existed, where they are DDP's defaults
    unused += tuple(f"ddp.{key}" for key, value in DDP_DEFAULTS.items() if cfg.ddp.get(key, value) == value)
    return unused


def _hashed(identity_: dict) -> str:
    canonical = json.dumps(identity_, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _resolved_without(cfg: DictConfig, keys: list[str]) -> dict:
    """cfg resolved, with `keys` null (they cannot be resolved outside Hydra's job): set in place and put
    back, as a copy of the config would cost more than the rest of a job id (a sweep plans 500 jobs)."""
    saved = {}
    try:
        for key in keys:
            saved[key] = node_of(cfg, key)[2]._value()
            OmegaConf.update(cfg, key, None, merge=False)
        return OmegaConf.to_container(cfg, resolve=True)
    finally:
        for key, value in saved.items():
            OmegaConf.update(cfg, key, value, merge=False)


def job_dir_name(cfg: DictConfig, job: str) -> str:
    """A job's folder in its sweep: its batch size (its mode says: a compare job's smallest and largest)
    and repeat to read, its identity to be unique."""
    return f"{mode_of(cfg.mode).folder(cfg)}_r{cfg.repeat}_{job[:8]}"
