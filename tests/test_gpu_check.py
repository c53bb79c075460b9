"""The prepared GPU check (.ci/gpu-check) works before a GPU session spends minutes on it: run
CPU-sized under a budget too small for its sweep, it goes through every part, stops the sweep at its
share, reports what finished, exits 0, and leaves what a lent machine's $OUT hands back (at most 8
files, none in sub-folders)."""

import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "gpu-check"
SMOKE_SWEEP_JOBS = 16 * 6  # batch_size=range(24,40) repeats=6


def test_gpu_check_cut_by_its_budget_reports_what_finished_and_exits_0(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "TMPDIR": str(tmp_path),
           "BSBENCH_CHECK_BUDGET_S": "80", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(["bash", str(SCRIPT), "--smoke"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    files = sorted(p.name for p in out.iterdir())
    assert all((out / name).is_file() for name in files) and len(files) <= 8, files
    assert {"bench.json", "precisions.md", "sweep.md", "compare.md", "results.tar.gz", "machine.txt"} <= set(files)
    with tarfile.open(out / "results.tar.gz") as tar:
        results = [m for m in tar.getnames() if m.endswith("results.json")]
    swept = [m for m in results if "/sweep/" in m]
    assert sorted(m.rsplit("/", 2)[-2] for m in results if "/compare/" in m) == ["bs15", "bs16", "bs17"]
    assert "compare: exit 0" in proc.stdout  # its rounds ended by themselves, on their cap or their budget
    assert re.search(r"\| 16 \| 2\^4, 8×2 \| 15 \| \d+ rounds, paired \|", proc.stdout)
    assert 0 < len(swept) < SMOKE_SWEEP_JOBS  # cut at its share of the budget, not lost
    assert "bsbench / plain:" in proc.stdout and "# Are powers of two" in proc.stdout
    assert "| 32-true |" in proc.stdout and "| bf16-true |" in proc.stdout  # the precisions' table
    assert "largest batch size that ran: 256 (the search ended at: dataset)" in proc.stdout  # find_max
    assert "sweep: exit 124" in proc.stdout  # stopped by its deadline
    assert proc.stdout.rstrip().splitlines()[-1].startswith("whole check:")
