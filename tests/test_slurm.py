"""hydra/launcher=slurm on a real SLURM cluster: two nodes on this machine (tests/slurm/start; CI starts
it before the tests), through the public command line: 2-node DDP runs on the CPU (gloo) where the nodes
matter, one task per job where a test is about how a sweep's jobs stop and resume."""

import os
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import CLI, HELPERS, ZYGOTE, wait_for

# 2-node DDP jobs, one rank per node, on the CPU
SLURM = ["-m", "hydra/launcher=slurm", "accelerator=cpu", "strategy=ddp", "devices=1", "trainer.num_nodes=2",
         "experiment=smoke"]
# one task per job, for the tests of how a sweep's jobs stop and resume (the 2-node path's stop is
# test_ctrl_c_cancels_the_sweeps_slurm_jobs'): a fresh interpreter less per job, and one node left free
ONE_NODE = [o for o in SLURM if not o.startswith("trainer.num_nodes=")]


def _waiting(tmp_path: Path, batch_size: int) -> tuple[list[str], Path]:
    """Overrides under which the job of `batch_size` waits in its first step until the returned file exists."""
    go = tmp_path / "go"
    return ["+callbacks.fault._target_=faults.WaitFor", f"+callbacks.fault.batch_size={batch_size}",
            f"+callbacks.fault.path={go}"], go


def _started_waiting(cli, command: list[str], go: Path):
    """The sweep started in the background, once its waiting job is in its first step: (process, SLURM job id)."""
    sweep = cli.start(*command)
    wait_for(lambda: Path(f"{go}.waiting").exists())
    return sweep, Path(f"{go}.waiting").read_text()


def _slurm_state(job: str) -> str:
    proc = subprocess.run(["squeue", "-h", "--states=all", "-o", "%T", "-j", job], capture_output=True, text=True)
    return proc.stdout.strip()


def test_a_sweep_of_two_node_ddp_jobs_runs_and_a_rank_failing_on_one_node_fails_only_its_job(slurm_cli):
    # the node count swept too: each job is allocated its own (one SLURM array per allocation); rank 1, on
    # the second node, fails in the 2-node job of batch size 31 (the 1-node jobs have no rank 1)
    proc = slurm_cli(*ONE_NODE, "trainer.num_nodes=2,1", "batch_size=30,31", "+callbacks.fault._target_=faults.FailOnRank",
                     "+callbacks.fault.rank=1", "+callbacks.fault.batch_size=31", timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]  # a failed run, told after every job ended
    runs = {(r["batch_size"], r["config"]["trainer"]["num_nodes"]): r for r in slurm_cli.results()}
    assert sorted(runs) == [(30, 1), (30, 2), (31, 1), (31, 2)]
    failed = runs.pop((31, 2))
    assert failed["status"] == "failed" and failed["failed_rank"] == 1
    assert failed["error_type"] == "ValueError" and failed["error"] == "simulated failure on rank 1"
    assert "failed (ValueError: simulated failure on rank 1)" in proc.stdout
    for (batch_size, nodes), r in runs.items():  # the sweep went on
        assert r["status"] == "ok" and r["train_samples_per_s"] > 0
        assert r["world_size"] == nodes and r["global_batch_size"] == nodes * batch_size
    assert len({r["slurm_job_id"] for r in [*runs.values(), failed]}) == 4
    # each job's tasks (one per node) left their logs where the docs say
    sweep = slurm_cli.sweep_dir()
    for (_, nodes), r in runs.items():
        logs = sweep / ".submitit" / r["slurm_job_id"]
        assert all((logs / f"{r['slurm_job_id']}_{task}_log.out").is_file() for task in range(nodes))
    # one line per job as it ends, then the report; no scheduler chatter (sacct has no accounting here)
    assert [line.split(":")[0] for line in proc.stdout.splitlines() if line.startswith("job ")] == [
        f"job {k} of 4" for k in range(1, 5)]
    assert "world_size=2" in proc.stdout and "| 30 | 1 |" in (sweep / "summary.md").read_text()
    assert f"[SLURM job {runs[(30, 2)]['slurm_job_id']}]" in proc.stdout
    assert "sacct" not in proc.stdout + proc.stderr and "(submitit)" not in proc.stdout + proc.stderr


def test_a_tune_on_two_nodes_through_slurm_says_how_its_advice_scales(slurm_cli):
    # SLURM starts the ranks (one task per node): they join one process group before the first stage
    proc = slurm_cli(*SLURM, "model=custom", "model._target_=toy.TinyNet", "data=synthetic", "mode=tune",
                     "budget_min=0.3", "compare.steps=2", "compare.warmup_steps=1", "timing.warmup_steps=1", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (summary,) = [r for r in slurm_cli.results() if r.get("tune_decision")]
    scaling = summary["tune_scaling"]
    assert scaling["devices"] == 2 and 0 < scaling["ci_low"] <= scaling["efficiency"] <= scaling["ci_high"]
    assert "on 2 devices " in proc.stdout and "[SLURM job " in proc.stdout
    pasted = next(slurm_cli.outputs.rglob("tune.md")).read_text().split("## To use it")[1]
    assert "num_nodes=2" in pasted and "trainer.num_nodes=2" in pasted  # the snippet and the command again


def test_ctrl_c_cancels_the_sweeps_slurm_jobs(slurm_cli, tmp_path):
    # 2-node jobs: the stop of a job with a task on each node
    waiting, go = _waiting(tmp_path, 31)
    sweep, job = _started_waiting(slurm_cli, [*SLURM, "batch_size=30,31", *waiting], go)
    os.killpg(sweep.pid, signal.SIGINT)  # Ctrl-C in the terminal
    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 130, err[-3000:]
    (cancelling,) = [line for line in err.splitlines() if "cancelling the sweep's SLURM jobs (scancel " in line]
    assert job in cancelling.split("scancel ")[1].rstrip(")").split()
    assert _slurm_state(job) == "CANCELLED"
    (stopped,) = [r for r in slurm_cli.results() if r["batch_size"] == 31]
    assert stopped["status"] == "interrupted" and stopped["slurm_job_id"] == job
    assert stopped["error"] == f"SLURM job {job} was cancelled: its sweep was interrupted"
    assert (slurm_cli.sweep_dir() / "summary.md").is_file()


@pytest.fixture(scope="module")
def time_limited(slurm_conf, tmp_path_factory):
    """The sweep of test_a_job_at_its_time_limit_records_that_it_was_stopped_for_it, started before the
    one-node tests below: its job waits about a minute on one node for SLURM's warning while they use
    the other. (its process, its CLI)"""
    cli = CLI(tmp_path_factory.mktemp("time-limit"))
    waiting, _ = _waiting(cli.cwd, 31)
    env = {**CLI.env(), "SLURM_CONF": str(slurm_conf), "OMP_NUM_THREADS": "1"}
    proc = ZYGOTE.start([*ONE_NODE, "batch_size=31", *waiting, "hydra.launcher.timeout_min=1",
                         "hydra.launcher.signal_delay_s=5"], cwd=cli.cwd, env=env)
    yield proc, cli
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # its SLURM job cancelled with it
        proc.communicate(timeout=120)


@pytest.mark.usefixtures("time_limited")
def test_a_cancelled_job_says_so_a_sweep_whose_jobs_still_run_is_not_resumed_twice_and_resume_finishes(
        slurm_cli, tmp_path):
    waiting, go = _waiting(tmp_path, 31)
    command = [*ONE_NODE, "batch_size=30,31", *waiting]
    sweep, job = _started_waiting(slurm_cli, command, go)
    subprocess.run(["scancel", job], check=True)
    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 1, err[-3000:]
    runs = {r["batch_size"]: r for r in slurm_cli.results()}
    assert runs[30]["status"] == "ok"
    cancelled = runs[31]
    assert cancelled["status"] == "interrupted" and cancelled["slurm_state"] == "CANCELLED"
    assert cancelled["slurm_job_id"] == job and cancelled["error"] == f"SLURM job {job} was cancelled (scancel)"
    directory = slurm_cli.sweep_dir()
    assert f"resume={directory.relative_to(slurm_cli.cwd)} runs them again" in err

    # resumed, and its submitting process dies (a closed session) while the job runs on: no second resume
    Path(f"{go}.waiting").unlink()
    resumed, job = _started_waiting(slurm_cli, [*command, f"resume={directory}"], go)
    os.killpg(resumed.pid, signal.SIGKILL)
    resumed.wait(timeout=60)
    proc = slurm_cli(*command, f"resume={directory}", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"bsbench: error: resume={directory}: SLURM jobs {job} of this sweep still run; wait for them to end "
        f"(squeue -j {job.split('_')[0]}) or cancel them (scancel {job}), then resume.")
    subprocess.run(["scancel", job], check=True)
    wait_for(lambda: _slurm_state(job) in ("CANCELLED", "FAILED", ""))

    go.write_text("")
    proc = slurm_cli(*command, f"resume={directory}", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = {r["batch_size"]: r for r in slurm_cli.results()}
    assert all(r["status"] == "ok" for r in runs.values())
    assert runs[31]["slurm_job_id"] not in (cancelled["slurm_job_id"], job)  # a new SLURM job, the same folder
    assert "1 of 2 jobs already done there, 1 to run" in proc.stdout


def test_a_partition_slurm_does_not_know_ends_the_sweep_in_one_line(slurm_cli):
    proc = slurm_cli(*SLURM, "batch_size=30,31", "hydra.launcher.partition=gpux", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "bsbench: error: SLURM refused the sweep's jobs (sbatch: error: invalid partition specified: gpux); "
        "check the hydra.launcher settings (partition, account, qos, timeout_min, ...).")
    assert not slurm_cli.results()
    typo = slurm_cli(*SLURM, "batch_size=30", "hydra.launcher.timeout_min=abc", timeout=120)
    assert typo.returncode == 2 and typo.stderr.strip().splitlines()[-1].startswith(
        'bsbench: error: a hydra.launcher setting is not one submitit takes (Parameter "timeout_min" expected type')


def test_the_slurm_launcher_without_its_extra_is_named_in_one_line(cli, tmp_path):
    # submitit and hydra-submitit-launcher made unimportable, as in an install without bsbench[slurm]
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'submitit' or name.startswith(('submitit.', 'hydra_plugins.hydra_submitit_launcher')):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n")
    env = {**cli.env(), "PYTHONPATH": os.pathsep.join([str(blocker), str(HELPERS)])}
    proc = subprocess.run(cli.command("-m", "hydra/launcher=slurm", "accelerator=cpu", "experiment=smoke",
                                      "batch_size=30,31"), cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == ('bsbench: error: hydra/launcher=slurm needs the slurm extra: pip '
                                                     'install "bsbench[slurm]" (hydra-submitit-launcher), then run the '
                                                     'sweep again.')
    assert not list(tmp_path.rglob("results.json"))


def test_job_states_are_read_from_sacct_and_squeue():
    from bsbench.job.slurm import _parse

    # sacct names who cancelled a job after its state; squeue gives one line per array task
    assert _parse("7_0|COMPLETED\n7_1|CANCELLED by 0\n") == {"7_0": "COMPLETED", "7_1": "CANCELLED"}
    assert _parse("12|RUNNING\n") == {"12": "RUNNING"}


def test_a_job_at_its_time_limit_records_that_it_was_stopped_for_it(time_limited):
    # SLURM warns (SIGUSR2) at its first scheduling tick (every 30 s) less than signal_delay_s + 30 s before
    # the limit: 25 to 55 s after the start (the job waits in its first step by then); the limit itself is
    # a tick later. The sweep started before the one-node tests above (`time_limited`).
    proc, cli = time_limited
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 1, err[-3000:]
    (stopped,) = cli.results()
    assert stopped["status"] == "interrupted" and "time limit" in stopped["error"]
    assert "hydra.launcher.timeout_min" in stopped["error"]
