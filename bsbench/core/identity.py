"""What a job is, whatever the command that asked for it: its typed config, resolved, less the
sweep-control keys (bsbench.core.fields.SWEEP_CONTROL) and less every value Hydra derives from the
job's own directory (`${hydra:runtime.output_dir}`: the logger's and the Trainer's directories),
which would make the identity depend on the folder that is named after it. A resumed sweep matches
jobs by this content, never by folder name or command text: `batch_size=30,31` and `batch_size=31,30
cooldown_s=30` are the same jobs, `trainer.max_steps=100` is another."""

import hashlib
import json

from omegaconf import DictConfig, OmegaConf

from bsbench.core.config import node_of
from bsbench.core.fields import MODE_SECTIONS, SWEEP_CONTROL, flatten, without
from bsbench.modes import mode_of


def identity(cfg: DictConfig) -> dict:
    """The job's flattened, resolved config, less sweep control and what comes from its directory."""
    unresolved = flatten(OmegaConf.to_container(cfg, resolve=False))
    from_directory = [key for key, value in unresolved.items() if isinstance(value, str) and "${hydra:" in value]
    resolved = _resolved_without(cfg, from_directory)
    mode = mode_of(cfg.get("mode"))
    unused = mode.unused(cfg)  # mode=compare of compare.batch_sizes: its batch_size is not what it runs
    # a mode's own section is part of that mode's jobs only (a throughput job is the same job whatever
    # profile.active says, and job ids from before these sections existed stay what they were)
    unused += tuple(section for section in MODE_SECTIONS if section not in mode.sections)
    if not cfg.compare.get("settings"):  # job ids from before compare.settings existed stay what they were
        unused += ("compare.settings",)
    if cfg.data.get("shape", None) is None:  # and from before data.shape existed
        unused += ("data.shape",)
    return without(flatten(resolved), (*SWEEP_CONTROL, "hydra", *from_directory, *unused))


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


def job_id(cfg: DictConfig) -> str:
    canonical = json.dumps(identity(cfg), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def job_dir_name(cfg: DictConfig, job: str) -> str:
    """A job's folder in its sweep: its batch size (its mode says: a compare job's smallest and largest)
    and repeat to read, its identity to be unique."""
    return f"{mode_of(cfg.mode).folder(cfg)}_r{cfg.repeat}_{job[:8]}"
