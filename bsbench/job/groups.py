"""Hydra's side of bsbench that more than one module reads: the config groups a user picks from, where
their options are (bsbench's conf/ and the config directories a user adds to Hydra's search path), and
the resolvers bsbench's config files use. The app (bsbench.job.app), the sweep's planning
(bsbench.job.sweep), the overhead benchmark and the docs generator (bsbench.docs) read it; importing it
registers the resolvers, and imports OmegaConf alone (Hydra only when a search path is read)."""

from pathlib import Path

from omegaconf import OmegaConf

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
# the default precision by accelerator: what runs as named there (16-mixed would run as bf16-mixed on a CPU);
# a value of the config alone, never of the machine, so that a sweep planned on one machine and run on
# another (SLURM) gives its jobs the ids they are run with
OmegaConf.register_new_resolver("bsbench_precision", lambda accelerator: "32-true" if accelerator == "cpu" else "16-mixed",
                                replace=True)
# DIR under the launch directory, or DIR itself where absolute (logger=mlflow's store under output_root).
OmegaConf.register_new_resolver("bsbench_under", lambda cwd, path: str(Path(cwd) / path), replace=True)

# The config groups a user picks an option of (`mode=throughput`); Hydra's own are under hydra/.
GROUPS = ("mode", "model", "data", "trainer", "logger", "experiment")  # in the order the docs show them


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
