import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from bsbench.core.config import typed
from bsbench.job.app import config_dir

# Tiny, fast settings on top of experiment=smoke, for tests that go through the command line.
SMOKE = ["experiment=smoke", "accelerator=cpu"]
HELPERS = Path(__file__).resolve().parent / "helpers"


class CLI:
    """Runs `python -m bsbench ...` in a fresh directory, the way a user would."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.outputs = cwd / "outputs"

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), cwd=self.cwd, env=self.env(), capture_output=True, text=True,
                              timeout=timeout)

    def start(self, *args: str) -> subprocess.Popen:
        """The same, in the background, in its own process group (to be signalled like a terminal would)."""
        return subprocess.Popen(self.command(*args), cwd=self.cwd, env=self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)

    @staticmethod
    def command(*args: str) -> list[str]:
        return [sys.executable, "-m", "bsbench", *args]

    @staticmethod
    def env() -> dict:
        path = os.pathsep.join(filter(None, [str(HELPERS), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": path}

    def sweep_dir(self) -> Path:
        (sweep,) = [p for p in (self.outputs / "multirun").glob("*/*") if p.is_dir()]
        return sweep

    def results(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.outputs.rglob("results.json"))]


def wait_for(predicate, timeout=300.0):
    """Poll until `predicate()` holds: a cap for a hung process, not a speed threshold (a loaded
    machine is slow, and the tests must pass there)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def cli(tmp_path) -> CLI:
    return CLI(tmp_path)


def composed(*overrides):
    """The config `python -m bsbench <overrides>` composes, Hydra's own section included."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def job_config(tmp_path, *overrides):
    """A job's typed config on top of SMOKE, as bsbench.job.run receives it, with its output directory in tmp_path."""
    cfg = composed(*SMOKE, *overrides)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    return typed(cfg)


def write_cifar10_format(root: Path, train_per_batch: int = 40, test_images: int = 40, seed: int = 0) -> Path:
    """A small directory in CIFAR-10's python format (5 training batches, a test batch, the meta file),
    readable by torchvision's CIFAR10 once the md5 check is off (data.verify=false)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def batch(n):
        return {
            "data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, size=n).tolist(),
        }

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(train_per_batch)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(test_images)))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    return root


# The two-node SLURM cluster of tests/slurm/start (its own slurm.conf: never a real cluster's).
SLURM_DIR = Path(os.environ.get("BSBENCH_SLURM_DIR", "/tmp/bsbench-slurm"))
SLURM_START = Path(__file__).resolve().parent / "slurm" / "start"


def _slurm_answers(conf: Path) -> bool:
    if not conf.is_file() or shutil.which("sinfo") is None:
        return False
    proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], env={**os.environ, "SLURM_CONF": str(conf)},
                          capture_output=True, text=True, timeout=30)
    states = dict(line.split() for line in proc.stdout.splitlines() if len(line.split()) == 2)
    return proc.returncode == 0 and all(states.get(n, "") in ("idle", "mix", "alloc") for n in ("n1", "n2"))


@pytest.fixture(scope="session")
def slurm_conf() -> Path:
    """The test cluster's slurm.conf. Started here where this machine can host it (root with apt-get: CI
    runs tests/slurm/start before the tests; a failure to start is a failure there); elsewhere its tests
    are skipped, with the reason in pytest's summary."""
    conf = SLURM_DIR / "slurm.conf"
    if _slurm_answers(conf):
        return conf
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"no SLURM test cluster at {conf}: run `sudo tests/slurm/start` (Debian or Ubuntu) to run "
                    "the SLURM tests")
    proc = subprocess.run([str(SLURM_START)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not _slurm_answers(conf):
        pytest.fail(f"this machine can host the SLURM test cluster, but tests/slurm/start failed:\n{proc.stderr}")
    return conf


@pytest.fixture
def slurm_cli(cli, slurm_conf, monkeypatch) -> CLI:
    """`python -m bsbench` with the test cluster as its SLURM; one thread per rank (the two nodes share
    this machine's cores). Where this process may, a daemon of the cluster that died since the last test
    is started again first (tests/slurm/start is idempotent, and reuses what runs)."""
    if os.geteuid() == 0:
        subprocess.run([str(SLURM_START)], capture_output=True, text=True, timeout=120)
    monkeypatch.setenv("SLURM_CONF", str(slurm_conf))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return cli
