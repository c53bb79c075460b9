"""What bsbench costs where it is not running a job: other Hydra apps on the machine (Hydra imports
every hydra_plugins module at start-up), `--help` and `--cfg job`, and a report built where torch is
not installed."""

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bsbench.core.results import write_json_atomic

HEAVY = ("torch", "lightning", "torchvision", "matplotlib")
LOADED = f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"


def loaded_after(code: str, cwd) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", f"import json, sys\n{code}\n{LOADED}"], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_another_hydra_app_loads_no_heavy_module_because_of_bsbench(tmp_path):
    # what Hydra does at every app's start: find and import every plugin, bsbench's sweeper among them
    code = ("from hydra.core.plugins import Plugins\nfrom hydra.plugins.sweeper import Sweeper\n"
            "assert any(p.__name__ == 'BsbenchSweeper' for p in Plugins.instance().discover(Sweeper))")
    assert loaded_after(code, tmp_path) == []


def test_help_and_printing_the_config_load_no_heavy_module(tmp_path):
    for args in (["--help"], ["--cfg", "job", "experiment=smoke"]):
        code = ("import runpy\nsys.argv = ['bsbench', *" + repr(args) + "]\n"
                "try:\n    runpy.run_module('bsbench', run_name='__main__')\nexcept SystemExit as e:\n    assert not e.code\n")
        assert loaded_after(code, tmp_path) == [], args


def test_the_report_is_built_where_torch_lightning_and_torchvision_cannot_be_imported(tmp_path):
    for i, (batch_size, rate) in enumerate([(31, 100.0), (31, 102.0), (32, 110.0), (32, 111.0)]):
        (tmp_path / str(i)).mkdir()
        write_json_atomic(tmp_path / str(i) / "results.json", {
            "status": "ok", "mode": "train", "batch_size": batch_size, "repeat": i // 2, "train_samples_per_s": rate,
            "train_time_s": 10.0, "epoch_times_s": [5.0, 5.0], "config": {"precision": "32-true"}})
    blocked = "for name in ('torch', 'lightning', 'torchvision', 'pytorch_lightning'):\n    sys.modules[name] = None\n"
    code = blocked + f"from bsbench.report.cli import main\nassert main([{str(tmp_path)!r}]) == 0\n"
    proc = subprocess.run([sys.executable, "-c", "import sys\n" + code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| 32 | 2^5, 8×4 | 31 | 2 vs 2 |" in (tmp_path / "verdict.md").read_text()
    assert (tmp_path / "samples_per_s.png").is_file()


ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path, package_parent: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(ROOT / "pyproject.toml")], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_packages_layers_hold_and_a_function_level_import_breaks_them(tmp_path):
    # pyproject.toml's contracts: the layers (docs/development.md), the core and the modes free of torch, the
    # report free of the job and training sides, no import cycle
    proc = lint_imports(ROOT, ROOT)
    assert proc.returncode == 0 and "BROKEN" not in proc.stdout and proc.stdout.count("KEPT") == 5, proc.stdout
    # an import inside a function counts: torch imported lazily by the core breaks its contract, and a mode
    # reaching lazily for the job's side breaks the layers
    copy = tmp_path / "bsbench"
    shutil.copytree(ROOT / "bsbench", copy, ignore=shutil.ignore_patterns("__pycache__", "conf"))
    with open(copy / "core" / "stats.py", "a") as f:
        f.write("\n\ndef lazily():\n    import torch  # noqa: F401\n")
    with open(copy / "modes" / "train.py", "a") as f:
        f.write("\n\ndef lazily():\n    from bsbench.job import fit  # noqa: F401\n")
    proc = lint_imports(tmp_path, tmp_path)
    assert proc.returncode == 1, proc.stdout
    assert "bsbench.core.stats -> torch" in proc.stdout and "bsbench.modes.train -> bsbench.job.fit" in proc.stdout


def test_no_module_imports_another_ones_private_name():
    # a name another module uses is public: one with a leading underscore is its own module's to change
    found = []
    for path in sorted((ROOT / "bsbench").rglob("*.py")) + sorted((ROOT / "hydra_plugins").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bsbench"):
                found += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == []


def test_every_mode_has_its_run_and_every_run_its_mode():
    # a mode is what it is (bsbench.modes) and how it runs (bsbench.job.runs): neither without the other
    from bsbench.job.runs import RUNS
    from bsbench.modes import MODES

    assert list(RUNS) == list(MODES) and all(mode.name == name for name, mode in MODES.items())
    assert sorted(p.stem for p in (ROOT / "conf" / "mode").glob("*.yaml")) == sorted(MODES)
