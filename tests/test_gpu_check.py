"""The prepared GPU checks (.ci/gpu-check, .ci/gpu-tune) work before a GPU session spends minutes on
them: gpu-check run CPU-sized under a budget too small for its sweep goes through every part, stops the
sweep at its share, reports what finished, exits 0, and leaves what a lent machine's $OUT hands back
(at most 8 files, none in sub-folders); gpu-tune leaves tune.md, its plot and every result."""

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

from conftest import ZYGOTE

CI = Path(__file__).resolve().parents[1] / ".ci"
SMOKE_SWEEP_JOBS = 16 * 6  # batch_size=range(24,40) repeats=6
# a tune CPU-sized to ten seconds (as .ci/gpu-check --smoke runs it): each of its stages runs a few rounds
# whatever its budget
TINY_TUNE = ["batch_size=16", "tune.max_batch_size=16", "tune.grid_points=2", "timing.warmup_steps=1",
             "compare.warmup_steps=1", "compare.steps=2"]


def env_for(tmp_path: Path, **extra: str) -> dict:
    """The script's environment; its `$PYTHON -m bsbench ...` commands forked from the session's preloaded
    interpreter (tests/helpers/zygote_client.py: about 5 s less per command, the script itself unchanged)."""
    return {**os.environ, **ZYGOTE.python(), "OUT": str(tmp_path / "out"), "TMPDIR": str(tmp_path),
            "PYTHONWARNINGS": "ignore", **extra}


def test_gpu_check_cut_by_its_budget_reports_what_finished_and_exits_0(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(CI / "gpu-check"), "--smoke"], env=env_for(tmp_path, BSBENCH_CHECK_BUDGET_S="60"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    files = sorted(p.name for p in out.iterdir())
    assert all((out / name).is_file() for name in files) and len(files) <= 8, files
    assert {"bench.json", "precisions.md", "sweep.md", "compare.md", "results.tar.gz", "machine.txt"} <= set(files)
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
        results = [m for m in names if m.endswith("results.json")]
        layouts = [json.load(tar.extractfile(m)) for m in results if m.split("/")[1] == "channels_last"]
    assert {"./logs/bench.log", "./logs/sweeps.log"} <= set(names)  # folded in: $OUT keeps 8 files
    swept = [m for m in results if "/sweep/" in m]
    assert sorted(m.rsplit("/", 2)[-2] for m in results if "/compare/" in m) == ["bs15", "bs16", "bs17"]
    assert "compare: exit 0" in proc.stdout  # its rounds ended by themselves, on their cap or their budget
    assert re.search(r"\| 16 \| 2\^4, 8×2 \| 15 \| \d+ rounds, paired \|", proc.stdout)
    assert 0 < len(swept) < SMOKE_SWEEP_JOBS  # cut at its share of the budget, not lost
    assert "bsbench / plain:" in proc.stdout and "# Are powers of two" in proc.stdout
    assert "| 32-true |" in proc.stdout and "| bf16-true |" in proc.stdout  # the precisions' table
    assert "largest batch size that ran: 256 (the search ended at: dataset)" in proc.stdout  # find_max
    # the two parts of issue 24 (compare.settings, mode=tune): one result per memory format, each with its
    # setting, and their verdict; tune.md and its "what matters" table
    assert "channels_last: exit 0" in proc.stdout
    assert sorted(r["channels_last"] for r in layouts) == [False, True], [r.get("channels_last") for r in layouts]
    layout_md = (out / "channels_last.md").read_text() if "channels_last.md" in files else ""
    assert "channels_last=true" in layout_md and "channels_last=false" in layout_md  # its verdict
    assert "tune.md" in files and "what matters" in (out / "tune.md").read_text().lower()
    assert "sweep: exit 124" in proc.stdout  # the last part, stopped by its deadline
    assert proc.stdout.rstrip().splitlines()[-1].startswith("whole check:")


def test_gpu_tune_leaves_tune_md_its_plot_and_results_and_prints_tune_md_last(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(CI / "gpu-tune"), "--smoke", *TINY_TUNE],
                          env=env_for(tmp_path, BSBENCH_TUNE_MIN="0.25"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    files = sorted(p.name for p in out.iterdir())
    assert all((out / name).is_file() for name in files) and len(files) <= 8, files
    assert {"machine.txt", "tune.md", "tune.log", "results.tar.gz"} <= set(files)
    assert any(re.fullmatch(r"tune.*\.png", name) for name in files), files
    with tarfile.open(out / "results.tar.gz") as tar:
        names = tar.getnames()
    assert sum(name.endswith("results.json") for name in names) >= 2 and any(n.endswith("tune.md") for n in names)
    assert re.search(r"^tune: exit 0 after \d+ s of \d+", (out / "machine.txt").read_text(), re.M)
    tune_md = (out / "tune.md").read_text()
    assert proc.stdout.rstrip().endswith(tune_md.rstrip())  # printed last
