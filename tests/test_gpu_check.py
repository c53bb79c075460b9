"""The prepared GPU check (.ci/gpu-check) works before a GPU session spends minutes on it: run
CPU-sized, it goes through both parts and leaves what a lent machine's $OUT hands back (at most 8
files, none in sub-folders)."""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "gpu-check"


def test_gpu_check_runs_both_parts_and_leaves_a_few_flat_files(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "TMPDIR": str(tmp_path),
           "BSBENCH_CHECK_BUDGET_S": "500", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(["bash", str(SCRIPT), "--smoke"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    files = sorted(p.name for p in out.iterdir())
    assert all((out / name).is_file() for name in files) and len(files) <= 8, files
    assert {"bench.json", "verdict.md", "summary.md", "sweep.tar.gz", "machine.txt"} <= set(files)
    with tarfile.open(out / "sweep.tar.gz") as tar:
        results = [m for m in tar.getnames() if m.endswith("results.json")]
    assert len(results) == 4  # batch sizes 31 and 32, two repeats each
    assert "bsbench / plain:" in proc.stdout and "# Are powers of two" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1].startswith("whole check:")
