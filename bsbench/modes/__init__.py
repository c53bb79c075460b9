"""The modes: one module each (its checks, its run, its results, its job line, its report words), one
conf/mode/<name>.yaml each. To add a mode: a module here with a Mode subclass and `MODE = ...`, its
name in MODULES, its config file, and its row in docs/modes/index.md (bsbench.modes.base says what a mode can change)."""

import importlib

from bsbench.core.errors import UserError
from bsbench.modes.base import Mode

MODULES = ("train", "throughput", "compare", "find_max", "inference", "profile", "tune")  # conf/mode/
MODES: dict[str, Mode] = {name: importlib.import_module(f"bsbench.modes.{name}").MODE for name in MODULES}


def mode_of(name: str) -> Mode:
    if name not in MODES:
        raise UserError(f"mode={name} is not a bsbench mode; use one of: {', '.join(MODES)}.")
    return MODES[name]


def sections() -> tuple[str, ...]:
    """Config sections only their own mode reads."""
    return tuple(section for mode in MODES.values() for section in mode.sections)
