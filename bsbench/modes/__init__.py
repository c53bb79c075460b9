"""The modes: one module each here (what the mode is: its checks, the results a job of it writes, its job
line, its report words; bsbench.modes.base says what a mode can change) and its run in
bsbench/job/runs/<name>.py, one conf/mode/<name>.yaml each. Importing the registry imports no torch and
nothing of bsbench's but bsbench.core: the report, the sweeper and the checks read it. To add a mode: a
module here with a Mode subclass and `MODE = ...`, imported below and in MODES; its run in
bsbench/job/runs (and RUNS there); its config file; and its row in docs/modes/index.md."""

from bsbench.core.errors import UserError
from bsbench.modes import compare, find_max, inference, profile, throughput, train, tune
from bsbench.modes.base import Mode

# conf/mode/<name>.yaml, in the order the docs show them
MODES: dict[str, Mode] = {m.MODE.name: m.MODE for m in (train, throughput, compare, find_max, inference, profile, tune)}
MODULES = tuple(MODES)


def mode_of(name: str) -> Mode:
    if name not in MODES:
        raise UserError(f"mode={name} is not a bsbench mode; use one of: {', '.join(MODES)}.")
    return MODES[name]


def sections() -> tuple[str, ...]:
    """Config sections only their own mode reads."""
    return tuple(section for mode in MODES.values() for section in mode.sections)


def results_of(result: dict) -> list[dict]:
    """The results a job writes: itself, or, where its mode measures several arms (mode=compare: one per
    batch size or setting), one result per arm in its own folder under the job's."""
    mode = MODES.get(result.get("mode"))
    return mode.results(result) if mode is not None else [result]
