import copy
import functools
import json
import os
import pickle
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# pytest-xdist's workers share the machine's cores: one OpenMP thread per process unless the caller chose
# (two workers of two threads each on 2 cores run the suite slower than one worker; see BENCHMARKS.md).
# Set before torch is imported here or in any command a test starts.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# One family for every process of the test session (bsbench.job.noise): the workers' tests run beside each
# other on purpose, and a job that sees the other worker's is not on a busy machine for what the tests check.
# test_noise.py's busy machine is a job of another family.
os.environ.setdefault("BSBENCH_FAMILY", f"bsbench-tests-{os.getpid()}")

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from bsbench.core.config import typed
from bsbench.job.groups import config_dir

# Tiny, fast settings on top of experiment=smoke, for tests that go through the command line.
SMOKE = ["experiment=smoke", "accelerator=cpu"]
HELPERS = Path(__file__).resolve().parent / "helpers"


def terminal(stdout: str) -> list[str]:
    """The lines a command printed, less the sweep's one warning that a run was measured on a busy machine
    (bsbench.job.noise.warn_once): a true line wherever the machine is shared, as CI's is with the other
    test worker's SLURM daemons and browsers, so a check of what else the terminal shows leaves it out."""
    return [line for line in stdout.splitlines()
            if not (line.startswith("bsbench: warning: ") and "(said once per sweep;" in line)]


class CLI:
    """Runs `python -m bsbench ...` in a fresh directory, the way a user would."""

    def __init__(self, cwd: Path):
        self.cwd = cwd
        self.outputs = cwd / "outputs"

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """The command's exit status, stdout and stderr. Each command is a process of its own, forked
        from one that has done bsbench's imports once per session (tests/helpers/zygote.py says how it
        stands in for a fresh interpreter): about 5 s less per command on a 2-core machine."""
        return self.start(*args).run(timeout)

    def start(self, *args: str) -> "Forked":
        """The same, in the background, in its own session and process group (to be signalled like a
        terminal would): subprocess.Popen's methods."""
        return ZYGOTE.start(list(args), cwd=self.cwd, env=self.env())

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


class Zygote:
    """The test session's tests/helpers/zygote.py, started at the first command and stopped with the session."""

    def __init__(self):
        self.proc = None
        self.ended: dict[int, int] = {}
        self.pending = b""

    def _start(self) -> None:
        env = {**CLI.env(), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        self.root = Path(tempfile.mkdtemp(prefix="bsbench-zygote-"))  # its socket and each command's output
        self.socket = self.root / "socket"
        self.proc = subprocess.Popen([sys.executable, str(HELPERS / "zygote.py"), str(self.socket)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=tempfile.gettempdir())
        self.ended, self.pending = {}, b""

    def _running(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._start()

    def python(self) -> dict:
        """The environment under which a script's `$PYTHON -m bsbench ...` (.ci/gpu-check's) is forked from
        this zygote (tests/helpers/zygote_client.py) once it listens; other commands run as they are."""
        self._running()
        wait_for(self.socket.exists, timeout=120)
        return {"PYTHON": f"{sys.executable} {HELPERS / 'zygote_client.py'}", "BSBENCH_ZYGOTE": str(self.socket)}

    def _next(self, timeout: float | None) -> dict | None:
        """The zygote's next message, or None after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError("tests/helpers/zygote.py ended; its stderr is in pytest's output")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        message = json.loads(line)
        if "started" in message:  # a pid the kernel gave again: not the earlier process's end
            self.ended.pop(message["started"], None)
        if "ended" in message:
            self.ended[message["ended"]] = message["returncode"]
        return message

    def start(self, args: list[str], cwd: Path, env: dict, module: str = "bsbench",
              sigint_ignored: bool = False) -> "Forked":
        """`python -m <module> <args>`, forked (started with Ctrl-C ignored where `sigint_ignored`)."""
        self._running()
        folder = Path(tempfile.mkdtemp(prefix="cli-", dir=self.root))
        out, err = folder / "stdout", folder / "stderr"
        request = {"args": args, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err), "module": module,
                   "sigint_ignored": sigint_ignored}
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        while True:
            message = self._next(60)
            assert message is not None, "tests/helpers/zygote.py did not fork"
            if "started" in message:
                return Forked(self, message["started"], [sys.executable, "-m", module, *args], folder)

    def wait(self, pid: int, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while pid not in self.ended:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self._next(left) is None:
                return None
        return self.ended[pid]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        if self.proc is not None:
            shutil.rmtree(self.root, ignore_errors=True)


class Forked:
    """A command forked by the zygote, used as a subprocess.Popen of `python -m bsbench ...` started with
    start_new_session=True: pid (its process group's too), poll, wait, communicate, send_signal, kill."""

    def __init__(self, zygote: Zygote, pid: int, args: list[str], folder: Path):
        self.zygote, self.pid, self.args, self.folder = zygote, pid, args, folder
        self.returncode = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.zygote.wait(self.pid, 0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self.zygote.wait(self.pid, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        out, err = (self.folder / "stdout").read_text(), (self.folder / "stderr").read_text()
        shutil.rmtree(self.folder, ignore_errors=True)
        return out, err

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def run(self, timeout: float) -> subprocess.CompletedProcess:
        """To its end, as subprocess.run: its process group killed past `timeout`."""
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.wait(60)
            out, err = self.communicate()
            raise subprocess.TimeoutExpired(self.args, timeout, out, err) from None
        out, err = self.communicate()
        return subprocess.CompletedProcess(self.args, self.returncode, out, err)


ZYGOTE = Zygote()


@pytest.fixture(scope="session", autouse=True)
def _stop_zygote():
    yield
    ZYGOTE.stop()


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
    """The config `python -m bsbench <overrides>` composes, Hydra's own section included: a copy of the
    session's composition of these overrides in this directory (Hydra composes in a quarter of a second,
    and many tests compose the same commands)."""
    return copy.deepcopy(_composed(overrides, os.getcwd()))


@functools.lru_cache(maxsize=None)
def _composed(overrides: tuple[str, ...], cwd: str):
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



# pytest-xdist (the suite runs on `-n auto` workers, pyproject.toml): the longest tests first, so that
# they run beside everything else instead of last and alone; the SLURM tests all on one worker, in turn
# (they share the test cluster's two nodes: two at once would wait on each other's jobs).
FIRST = ("test_slurm.py", "test_gpu_check.py")
# one unit each, for one worker: the SLURM tests, and the noise sentinel's (each measures the other's load)
TOGETHER = ("tests/test_slurm.py::", "tests/test_noise.py::")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: next((i for i, name in enumerate(FIRST) if item.path.name == name), len(FIRST)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """At most 4 workers: each starts a preloaded interpreter, and on a CPU more processes than cores
    slow every test that times training (one OpenMP thread each, above)."""
    return max(1, min(4, os.cpu_count() or 1))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Tests handed out one at a time as workers free up, in the order above, except the files of TOGETHER:
    one unit each, for one worker. (xdist's own `xdist_group` mark does not group under pytest 9: the name
    it appends to each test's id is lost.)"""
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return next((unit for unit in TOGETHER if nodeid.startswith(unit)), nodeid)

    return Scheduling(config, log)


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="session")
def browser() -> str:
    """A headless browser: Debian's chromium. Where this machine can install it (root with apt-get, as
    in CI, whose .ci/run installs it first) it is installed here; elsewhere the test is skipped, with
    the reason in pytest's summary."""
    found = next(filter(None, map(shutil.which, BROWSERS)), None)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"no headless browser ({', '.join(BROWSERS)}): `apt-get install chromium` to run this test")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]
    if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=900)
        proc = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            pytest.fail(f"this machine can install chromium, but apt-get failed:\n{proc.stderr[-2000:]}")
    return shutil.which("chromium")
