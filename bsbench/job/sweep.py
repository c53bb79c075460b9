"""The plan of a sweep, made before any job runs (bsbench's sweeper calls it): every job typed and
checked; the sweep's directory claimed for this process alone; with `resume=`, the jobs that already
have an `ok` result dropped; and every other job given a folder named after what it is
(bsbench.job.identity), so that no job ever writes into another configuration's folder, whatever
the order or the wording of the command that resumes it.

A sweep directory belongs to one sweep: a new sweep never takes a directory that holds another
sweep (two started in the same second get `<time>` and `<time>-2`), and a second process cannot
resume a directory that a live one is using. The claim is an advisory lock (flock) on a file in the
directory, held as long as the process lives, so a killed sweep leaves no stale lock behind."""

import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterator

from omegaconf import DictConfig, open_dict, read_write

from bsbench.core.config import node_of, typed
from bsbench.core.errors import UserError
from bsbench.job.identity import JobIds, job_dir_name
from bsbench.core.plan import write_plan
from bsbench.core import stopping
from bsbench.core.results import RESULT_FILE, finished_runs, read_results, write_json_atomic
from bsbench.core.stopping import STOP_FILE
from bsbench.job.groups import GROUPS
from bsbench.job.console import LOG_ONLY, follow_sweep

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; sweeps are not guarded against each other there
    fcntl = None

log = logging.getLogger("bsbench")
LOCK_FILE = ".bsbench.lock"
SWEEP_MARK = "multirun.yaml"  # Hydra writes it when a sweep starts
_held: list[int] = []  # the locks of this process's sweep directory, released when it exits
CREATED: list[Path] = []  # the directories this process made and claimed (a stop may remove them when empty)


def plan(config: DictConfig, compose: Callable[[list[str]], DictConfig], here: bool,
         jobs: list[list[str]]) -> list[list[str]]:
    """The jobs to launch, each with the Hydra overrides that put it in its own folder of the claimed
    directory. `compose` gives a job's config from its overrides (`composer`)."""
    from bsbench.job.validate import validate  # torch: after the types, which need none

    ids, names, validated, identify = [], [], set(), JobIds()
    for overrides, (cfg, changed) in zip(jobs, typed_jobs(jobs, compose)):
        setting_ = tuple(o for o in overrides if not o.startswith("repeat="))
        if setting_ not in validated:  # each configuration once, not once per repeat
            validate(cfg, here=here)
            validated.add(setting_)
        ids.append(identify(cfg, changed))
        names.append(job_dir_name(cfg, ids[-1]))
    seen: dict[str, int] = {}
    for i, job in enumerate(ids):
        if seen.setdefault(job, i) != i:
            first = jobs[seen[job]]
            raise UserError(f"{' '.join(jobs[i])} is the same job as {' '.join(first)} (they would share a folder); "
                            "use repeats=N to run a configuration N times.")
    directory = claim(config)
    (directory / STOP_FILE).unlink(missing_ok=True)  # an earlier launch's: this one decides anew, if at all
    done = finished_runs(directory) if config.resume else {}
    try:  # every job the command asks for, done or not: the report names those that end with no results.json
        write_plan(directory, [{"folder": name, "job_id": job, "overrides": list(overrides)}
                               for overrides, name, job in zip(jobs, names, ids)])
    except OSError as exc:  # a full disk: the jobs' own writes will say so, each in its line
        log.warning("could not write %s: %s", exc.filename, exc.strerror, extra={LOG_ONLY: True})
    planned = [[*overrides, f"hydra.sweep.dir={_quoted(directory)}", f"hydra.sweep.subdir={name}"]
               for overrides, name, job in zip(jobs, names, ids) if job not in done]
    follow_sweep(directory, len(planned))
    for overrides, job in zip(jobs, ids):
        if job in done:
            log.info("%s: already done in %s, skipped", " ".join(overrides), done[job]["run_dir"],
                     extra={LOG_ONLY: True})
    if config.resume:
        log.info("resuming %s: %d of %d jobs already done there, %d to run", directory, len(jobs) - len(planned),
                 len(jobs), len(planned))
    return planned


def typed_jobs(jobs: list[list[str]], compose: Callable[[list[str]], DictConfig]) \
        -> Iterator[tuple[DictConfig, tuple[str, ...] | None]]:
    """Every job's typed config, in turn, as `typed(compose(overrides))` gives it, at a fraction of the
    cost: the first job of each choice of config groups is composed and typed (50 ms); a later one
    that differs from it only in the values of the same keys (`batch_size=501`, `repeat=2`) is that
    config with its values set in place, each converted and checked by its schema node as the typed
    merge would (a fraction of a millisecond), and put back before the next. So a yielded config is
    valid until the next is asked for: read it, do not keep it. A value the schema refuses, one that
    is not finite, or a key the first job did not set takes the slow path, and its error is the
    typed merge's own.

    Each config comes with what it is: `()` for the first of its kind (the same object is yielded
    again for its kind's later jobs), the keys set in place for one of those, None for a config of
    its own."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed_once: dict[str, object] = {}  # a sweep's jobs repeat most of their overrides (Hydra parses in ms)
    firsts: dict[tuple, tuple[DictConfig, dict]] = {}  # group choices -> (typed config, its value overrides)
    for overrides in jobs:
        parsed = []
        for override in overrides:
            if override not in parsed_once:
                parsed_once[override] = parser.parse_overrides([override])[0]
            parsed.append(parsed_once[override])
        shaping = tuple(o.input_line for o in parsed if _shapes(o))
        values = {o.key_or_group: o.value() for o in parsed
                  if not _shapes(o) and not o.key_or_group.startswith("hydra.")}
        first = firsts.get(shaping)
        if first is None or first[1].keys() != values.keys():
            cfg = typed(compose(list(overrides)))
            kept = firsts.setdefault(shaping, (cfg, values))[0] is cfg
            yield cfg, () if kept else None
            continue
        cfg = first[0]
        changed = {key: value for key, value in values.items() if value != first[1][key]}
        saved = _set_values(cfg, changed)
        if saved is None:
            yield typed(compose(list(overrides))), None
            continue
        try:
            yield cfg, tuple(changed)
        finally:
            _set_values(cfg, saved)


def _set_values(cfg: DictConfig, values: dict) -> dict | None:
    """Set plain values in place (`a.b` keys), each through its schema node; the values they replace, or
    None (nothing changed) where one is not a plain value of a plain key, or the node refuses it."""
    from omegaconf import OmegaConf, ValueNode

    saved = {}
    try:
        for key, value in values.items():
            parent, leaf, held = node_of(cfg, key)
            if not isinstance(held, ValueNode) or held._is_interpolation() or not _plain(value):
                raise ValueError(key)
            saved[key] = held._value()
            setattr(parent, leaf, value)
    except Exception:
        for key, value in saved.items():  # back as it was
            OmegaConf.update(cfg, key, value, merge=False)
        return None
    return saved


def _plain(value) -> bool:
    """A value the typed merge would take as it is: no list or mapping, no NaN or infinity."""
    return value is None or isinstance(value, (bool, int, str)) or isinstance(value, float) and math.isfinite(value)


# Hydra's own settings that are values in its node, not choices of what is composed: a job's folder
# (hydra.sweep.dir, .subdir) and its launcher's parameters
HYDRA_VALUES = ("hydra.sweep.", "hydra.run.", "hydra.launcher.")


def _shapes(override) -> bool:
    """Whether an override changes what Hydra composes (a config group's choice, a key added or deleted,
    Hydra's own settings but HYDRA_VALUES) rather than setting a value of a composed key."""
    key = override.key_or_group
    if key.startswith(HYDRA_VALUES) and not (override.is_add() or override.is_delete() or override.is_force_add()):
        return False
    return (override.is_add() or override.is_delete() or override.is_force_add() or override.package is not None
            or key in GROUPS or "/" in key or key == "hydra" or key.startswith("hydra."))


def composer(load: Callable[[list[str]], DictConfig]) -> Callable[[list[str]], DictConfig]:
    """`load` for many jobs at a fraction of its cost: Hydra composes each distinct set of the overrides
    that change what is composed (`_shapes`: the config group choices and the like), a quarter of a
    second each; a job's plain `key=value` overrides are then applied to a copy of that composition by
    the function Hydra applies them with after composing, and Hydra's record of the job's overrides
    (hydra.overrides, hydra.job.override_dirname) is written as Hydra writes it, so that the result is
    what `load` would give (tests/test_sweep_plan.py compares them). A sweep of 500 batch sizes composes
    once, not 500 times. Where that function is not there (another Hydra), every job is composed."""
    import copy

    try:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
        from hydra.core.override_parser.overrides_parser import OverridesParser

        apply = ConfigLoaderImpl._apply_overrides_to_config
        parser = OverridesParser.create()
    except (ImportError, AttributeError):
        return load
    bases: dict[tuple, DictConfig] = {}

    def compose(overrides: list[str]) -> DictConfig:
        parsed = parser.parse_overrides(list(overrides))
        shapes = [_shapes(o) for o in parsed]
        shaping = [o for o, s in zip(parsed, shapes) if s]
        key = tuple(o.input_line for o in shaping)
        if key not in bases:
            bases[key] = load(list(key))
        base = bases[key]
        cfg = copy.deepcopy(base)
        apply([o for o, s in zip(parsed, shapes) if not s], cfg)
        # what `load` put before the job's own overrides (the sweep's Hydra overrides, the test's), then the job's
        hydra_before = list(base.hydra.overrides.hydra)[:len(base.hydra.overrides.hydra)
                                                          - sum(o.is_hydra_override() for o in shaping)]
        task_before = list(base.hydra.overrides.task)[:len(base.hydra.overrides.task)
                                                      - sum(not o.is_hydra_override() for o in shaping)]
        task = [o for o in parsed if not o.is_hydra_override()]
        cfg.hydra.overrides.hydra = hydra_before + [o.input_line for o in parsed if o.is_hydra_override()]
        cfg.hydra.overrides.task = task_before + [o.input_line for o in task]
        dirname = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = get_overrides_dirname(
            overrides=[*parser.parse_overrides(task_before), *task], kv_sep=dirname.kv_sep,
            item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys)
        return cfg

    return compose


class PlannedLoader:
    """Hydra's config loader as the launcher sees it: each job's config from the plan's compositions
    (`composer`), not composed again (a quarter of a second per job). Everything but
    load_sweep_config is Hydra's own."""

    def __init__(self, loader, compose: Callable[[list[str]], DictConfig]):
        self._loader, self._compose = loader, compose

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        from omegaconf import OmegaConf

        cfg = self._compose(list(sweep_overrides))
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)  # as Hydra does: the same ${now:} values
        return cfg

    def __getattr__(self, name):
        return getattr(self._loader, name)


def claim(config: DictConfig) -> Path:
    """The sweep's directory, locked for this process, and written into the sweep's config (Hydra saves
    it as multirun.yaml and its callbacks read it from there)."""
    directory = _resumed(Path(config.resume)) if config.resume else _new(Path(config.hydra.sweep.dir))
    with read_write(config.hydra.sweep), open_dict(config.hydra.sweep):
        config.hydra.sweep.dir = str(directory)
    return directory


def check_resumable(resume: str) -> None:
    """resume= must name a sweep directory this process could write into (checked before any job)."""
    path = Path(resume)
    if not (path / SWEEP_MARK).is_file():
        raise UserError(f"resume={resume} holds no bsbench sweep (no {SWEEP_MARK}); use the directory a sweep "
                        "printed, e.g. resume=outputs/multirun/<date>/<time>.")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"resume={resume} is not writable; resume as a user who can write there, or copy the "
                        "directory and resume the copy.")


def recorded_mode(resume: str) -> str | None:
    """The mode a single run's folder was run in (its .hydra/config.yaml), where it says one."""
    try:
        found = re.search(r"^mode: (\w+)$", (Path(resume) / ".hydra" / "config.yaml").read_text(), re.M)
    except OSError:
        return None
    return found.group(1) if found else None


def check_resumable_run(resume: str, mode: str) -> None:
    """resume= of a single run (mode=tune) must name a run of that mode this process could write into."""
    path = Path(resume)
    config = path / ".hydra" / "config.yaml"
    try:
        recorded = config.read_text()
    except OSError:
        raise UserError(f"resume={resume} holds no bsbench run (no {config.relative_to(path)}); use the folder the "
                        f"run printed, e.g. resume=outputs/<date>/<time>.") from None
    if f"\nmode: {mode}\n" not in f"\n{recorded}":
        raise UserError(f"resume={resume} holds no mode={mode} run; use the folder the mode={mode} run printed.")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"resume={resume} is not writable; resume as a user who can write there, or copy the "
                        "folder and resume the copy.")


def _resumed(path: Path) -> Path:
    check_resumable(str(path))
    if not _lock(path):
        raise UserError(f"resume={path} is in use by another bsbench process ({_holder(path)}); wait for it to end "
                        "or stop it, then resume.")
    return path


def _new(base: Path, mark: str = SWEEP_MARK, key: str = "hydra.sweep.dir") -> Path:
    """`base`, or the first free `base-2`, `base-3`, ...: locked for this process, holding no other
    sweep or run (its `mark`, or any result)."""
    for n in range(1, 1000):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        made = not candidate.exists()
        candidate.mkdir(parents=True, exist_ok=True)
        if not _lock(candidate):
            continue
        if (candidate / mark).exists() or next(candidate.rglob(RESULT_FILE), None) is not None:
            os.close(_held.pop())  # another one's, finished
            continue
        if made:
            CREATED.append(candidate.resolve())
        return candidate
    raise UserError(f"{key}={base} and 998 siblings hold other runs; use another {key}.")


def claim_run(config: DictConfig) -> None:
    """A single run's directory, like a sweep's: two runs started in the same second (or given the same
    hydra.run.dir) get `<time>` and `<time>-2`, so that neither writes into the other's results. Not
    where the run is one of several ranks that a cluster started (each would claim its own)."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "WORLD_SIZE" in os.environ:
        return
    if config.get("resume"):  # a run that resumes (mode=tune): its own earlier directory, for this process alone
        directory = Path(config.resume)
        if not _lock(directory):
            raise UserError(f"resume={directory} is in use by another bsbench process ({_holder(directory)}); wait "
                            "for it to end or stop it, then resume.")
    else:
        base = Path(config.hydra.run.dir)
        directory = _new(base if base.name else base.absolute(), mark=".hydra", key="hydra.run.dir")
    with read_write(config.hydra.run), open_dict(config.hydra.run):
        config.hydra.run.dir = str(directory)


def _lock(directory: Path) -> bool:
    if fcntl is None:
        return True
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another process holds it
        os.close(fd)
        return False
    except OSError as exc:  # a file system without locks (some network mounts): go on unguarded
        log.warning("cannot lock %s (%s): nothing stops another process from using this sweep directory",
                    directory, exc.strerror)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held.append(fd)
    return True


def _holder(directory: Path) -> str:
    try:
        return f"pid {int((directory / LOCK_FILE).read_text().strip())}"
    except (OSError, ValueError):
        return "pid unknown"


def _quoted(path: Path) -> str:
    """A path as a quoted value of Hydra's override grammar."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def remove_empty_files(directory: Path) -> None:
    """After a failed write: no zero-byte file stays behind (Hydra's .hydra/*.yaml, a log) to pass
    for a result."""
    for path in Path(directory).rglob("*"):
        try:
            if path.is_file() and path.name != LOCK_FILE and path.stat().st_size == 0:
                path.unlink()
        except OSError:
            pass


class Stopper:
    """Adaptive stopping of a sweep of separate jobs (target_ci, budget_min): after each round of the
    interleaved or shuffled order (round r holds repeat r), the verdict's comparisons over every result
    in the sweep directory decide whether another round runs (bsbench.core.stopping). The jobs it does
    not run stay planned: resume= runs them."""

    MIN_ROUNDS = 3  # a target is trusted from 3 runs of every configuration on

    def __init__(self, config: DictConfig, directory: Path):
        self.directory = Path(directory)
        self.target_ci, self.budget_min, self.cap = config.target_ci, config.budget_min, config.repeats
        self.started = time.monotonic()
        self.rounds_here = 0

    @staticmethod
    def active(config: DictConfig) -> bool:
        from bsbench.modes import mode_of

        return (config.target_ci is not None or config.budget_min is not None) and not mode_of(config.mode).own_rounds

    def after_round(self, round_: int, jobs_left: int) -> bool:
        """Whether the sweep stops after round `round_` (0-based); records why when it does."""
        from bsbench.core.stats import half_width
        from bsbench.report.summary import configurations
        from bsbench.report.verdict import comparisons

        self.rounds_here += 1
        elapsed = time.monotonic() - self.started
        widths = [half_width(c) for c in comparisons(configurations(read_results(self.directory)))]
        reason = stopping.decide(widths, round_ + 1, self.cap, target_ci=self.target_ci, budget_min=self.budget_min,
                                 elapsed_s=elapsed, round_s=elapsed / self.rounds_here, min_rounds=self.MIN_ROUNDS)
        if reason is None:
            return False
        stop = stopping.record(reason, round_ + 1, self.cap, self.target_ci, self.budget_min, elapsed, widths)
        write_json_atomic(self.directory / STOP_FILE, stop)
        left = f" {jobs_left} jobs not run; resume={self.directory} runs them." if jobs_left else ""
        log.info("%s%s", stopping.sentence(stop, "rounds of the sweep"), left)
        return True
