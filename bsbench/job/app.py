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


def options(group: str, places=()) -> list[str]:
    """A group's options: bsbench's own (conf/<group>/*.yaml) and those in the config directories `places`."""
    found = set()
    for place in (Path(config_dir()), *places):
        try:
            found |= {p.name[:-5] for p in (place / group).iterdir() if p.name.endswith(".yaml")}
        except (OSError, TypeError):  # no such group there
            continue
    return sorted(found)


def search_path(args: list[str]) -> list:
    """The config directories a user adds to Hydra's search path, as Hydra finds them: `--config-dir`
    (`-cd`), `hydra.searchpath=[...]` (file:// and pkg:// entries) and the SearchPathPlugins installed
    (their own `hydra_plugins`). Each a directory (a Path, or an importlib.resources one for pkg://)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    entries = []
    for i, arg in enumerate(args):
        if arg in ("--config-dir", "-cd") and i + 1 < len(args):
            entries.append(f"file://{args[i + 1]}")
        elif arg.startswith("--config-dir="):
            entries.append(f"file://{arg.split('=', 1)[1]}")
        elif arg.lstrip("+").startswith("hydra.searchpath="):
            try:
                entries += [str(e) for e in OverridesParser.create().parse_override(arg).value() or []]
            except Exception:  # Hydra reports its own syntax errors
                continue
    entries += _plugin_entries()
    return [place for place in map(_place, entries) if place is not None]


def _plugin_entries() -> list[str]:
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    try:
        from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
    except ImportError:  # another Hydra: its plugins' places are left to Hydra
        return []
    found = []
    for plugin in Plugins.instance().discover(SearchPathPlugin):
        path = ConfigSearchPathImpl()
        try:
            plugin().manipulate_search_path(path)
        except Exception:  # a plugin that fails is Hydra's to report
            continue
        found += [f"{e.path}" if "://" in e.path else f"file://{e.path}" for e in path.get_path()]
    return found


def _place(entry: str):
    if entry.startswith("file://"):
        return Path(entry[len("file://"):]).expanduser()
    if entry.startswith("pkg://"):
        from importlib import resources

        try:
            return resources.files(entry[len("pkg://"):])
        except (ModuleNotFoundError, TypeError):
            return None
    return Path(entry).expanduser()


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
