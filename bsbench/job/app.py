"""The Hydra entry point: `python -m bsbench [overrides]` and the `bsbench` console script.

Only Hydra, bsbench.core and bsbench.job.groups are imported here: `--help`, `--cfg job` and shell completion start in
a fraction of a second, and torch is imported by the job itself (bsbench.job.job)."""

import sys

import hydra
from omegaconf import DictConfig

from bsbench.core.errors import UserError, fail
from bsbench.job.groups import GROUPS, config_dir, options, search_path


def check_group_choices(args: list[str]) -> None:
    """A group option that does not exist (`mode=fastest`, `-m data=cifar10,imagenet`) in one line,
    before Hydra composes anything: Hydra's own answer is a screenful with the search path. Options of
    the user's config directories (search_path) are options like bsbench's."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    places = None
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
            if value is None or str(value) == "null" or str(value) in known:
                continue
            places = search_path(args) if places is None else places
            known = options(override.key_or_group, places)
            if str(value) not in known:
                where = " nor one in your config directories" if places else ""
                raise UserError(f"{override.key_or_group}={value} is not a bsbench {override.key_or_group} option"
                                f"{where}; use one of: {', '.join(known)}.")


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
    # an option of the user's config directories (not bsbench's) takes keys of its own
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
    from bsbench.core import interrupt
    from bsbench.job.noise import claim_family

    interrupt.from_the_start()  # the console script's start (python -m bsbench's is earlier, in __main__)
    claim_family()  # what this command starts (jobs, ranks, SLURM tasks) is not "other processes" to it
    try:
        check_group_choices(sys.argv[1:])
        check_setting_names(sys.argv[1:])
        hydra_main()
    except UserError as err:
        fail(err)
    except KeyboardInterrupt:  # before Hydra's callbacks or bsbench's sweeper could take it
        from bsbench.job.hooks import stopped_outside_a_job

        stopped_outside_a_job(None)


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    from bsbench.job.job import run_job

    run_job(cfg)


if __name__ == "__main__":
    main()
