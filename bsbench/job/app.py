"""The Hydra entry point: `python -m bsbench [overrides]` and the `bsbench` console script.

Only Hydra and bsbench.core are imported here: `--help`, `--cfg job` and shell completion start in
a fraction of a second, and torch is imported by the job itself (bsbench.job.job)."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from bsbench.core.errors import UserError, fail

# resume=DIR makes DIR the sweep directory; otherwise a new dated one.
OmegaConf.register_new_resolver("bsbench_sweep_dir", lambda resume, new: resume or new, replace=True)
# data.num_workers' default by where images are resized (conf/data/cifar10.yaml)
OmegaConf.register_new_resolver("bsbench_workers", lambda resize_on: 0 if resize_on == "device" else 3, replace=True)
# hydra/launcher=slurm's GPUs per node: one per device, none where the job runs on CPUs
OmegaConf.register_new_resolver("bsbench_gpus", lambda accelerator, devices: None if accelerator == "cpu" else devices,
                                replace=True)
# mode=profile's training steps: the warm-up, then each profile's untraced and traced steps
OmegaConf.register_new_resolver("bsbench_profile_steps", lambda skip, warmup, active, repeat: skip + (warmup + active)
                                * repeat, replace=True)
# mode=compare's default batch sizes, which give way to compare.settings (conf/mode/compare.yaml)
OmegaConf.register_new_resolver("bsbench_unless", lambda given, default: [] if given else list(default), replace=True)
# DIR under the launch directory, or DIR itself where absolute (logger=mlflow's store under output_root).
OmegaConf.register_new_resolver("bsbench_under", lambda cwd, path: str(Path(cwd) / path), replace=True)

# The config groups a user picks an option of (`mode=throughput`); Hydra's own are under hydra/.
GROUPS = ("data", "model", "trainer", "logger", "mode", "experiment")


def config_dir() -> str:
    """conf/ inside the installed package (a wheel carries it there), else the repository's conf/
    beside the package (an editable install, or running from the project root)."""
    package = Path(__file__).resolve().parents[1]
    packaged = package / "conf"
    return str(packaged if packaged.is_dir() else package.parent / "conf")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))


def check_group_choices(args: list[str]) -> None:
    """A group option that does not exist (`mode=fastest`, `-m data=cifar10,imagenet`) in one line,
    before Hydra composes anything: Hydra's own answer is a screenful with the search path."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-") or "=" not in arg or arg.split("=", 1)[0].lstrip("+~") not in GROUPS:
            continue
        try:
            override = parser.parse_override(arg)
        except Exception:  # Hydra reports its own syntax errors
            continue
        if override.is_delete() or override.package is not None:
            continue
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        known = options(override.key_or_group)
        for value in values:
            if value is not None and str(value) != "null" and str(value) not in known:
                raise UserError(f"{override.key_or_group}={value} is not a bsbench {override.key_or_group} option; "
                                f"use one of: {', '.join(known)}.")


# sections whose keys are not all bsbench's: extra callbacks, a logger's arguments
FREE_SECTIONS = ("callbacks", "logger", "hydra")


def check_setting_names(args: list[str]) -> None:
    """A key that is not a setting (`batchsize=30`) in one line with the closest setting's name, before
    Hydra answers it with a traceback-like screen whose advice (`+batchsize=30`) fails next. Keys under
    model and data are checked only while bsbench's own model and data are chosen (a class of the
    user's takes keys of its own)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from bsbench.core.config import setting_names, unknown_setting

    parser = OverridesParser.create()
    parsed = []
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            parsed.append(parser.parse_override(arg))
        except Exception:  # Hydra reports its own syntax errors
            continue
    chosen = {o.key_or_group: str(o.value()) for o in parsed if o.key_or_group in GROUPS and not o.is_sweep_override()}
    names = set(setting_names())
    for override in parsed:
        key = override.key_or_group
        section = key.split(".", 1)[0]
        if override.is_add() or override.is_delete() or override.package is not None or key in GROUPS:
            continue
        if section in FREE_SECTIONS or "/" in key:
            continue
        if section in ("model", "data") and (chosen.get(section) not in (None, *options(section))
                                             or chosen.get(section) == "custom"):
            continue
        if key not in names:
            raise UserError(unknown_setting(key))


def main() -> None:
    from bsbench.job.noise import claim_family

    claim_family()  # what this command starts (jobs, ranks, SLURM tasks) is not "other processes" to it
    try:
        check_group_choices(sys.argv[1:])
        check_setting_names(sys.argv[1:])
    except UserError as err:
        fail(err)
    hydra_main()


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    from bsbench.job.job import run_job

    run_job(cfg)


if __name__ == "__main__":
    main()
