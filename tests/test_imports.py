"""What bsbench costs where it is not running a job: other Hydra apps on the machine (Hydra imports
every hydra_plugins module at start-up), `--help` and `--cfg job`, and a report built where torch is
not installed."""

import json
import subprocess
import sys

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
