"""Device-count sweeps: DDP inside a Hydra multirun (gloo on the CPU), ddp_spawn, and the cluster
launcher's config."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SMOKE, composed, terminal


def test_ddp_sweep_over_device_counts_runs_each_job_once(cli, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # an even split (pytest-xdist's workers have one thread each)
    proc = cli("-m", "devices=1,2", "strategy=ddp", *SMOKE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = cli.sweep_dir()
    assert (sweep / "sweep.log").read_text().count("Launching 2 jobs") == 1  # no rank started the sweep again
    jobs = [p.name for p in sweep.iterdir() if p.is_dir()]
    assert len(jobs) == 2 and all(name.startswith("bs32_r0_") for name in jobs)  # no stray job directories
    assert len(list(cli.outputs.rglob("results.json"))) == 2
    runs = {r["world_size"]: r for r in cli.results()}
    assert sorted(runs) == [1, 2]
    assert runs[2]["global_batch_size"] == 64 and runs[2]["batch_size"] == 32
    assert runs[2]["inference_world_size"] == 2 and runs[2]["test_samples"] == 64
    # 256 training images split over 2 ranks: 4 steps of 32 per rank, 2 of them warm-up
    assert runs[2]["timed_steps"] == 2 and runs[2]["train_samples_per_s"] > 0
    assert all(r["status"] == "ok" and r["train_time_s"] > 0 for r in runs.values())
    assert "| 2x " in (sweep / "summary.md").read_text()
    # the same threads in all on the CPU: the 2 ranks share what one process has (torchrun would give each 1)
    assert runs[1]["torch_num_threads"] == 2 and runs[1]["omp_num_threads"] == "2"
    assert runs[2]["torch_num_threads"] == 1 and runs[2]["omp_num_threads"] == "1"
    # no torchrun banner, no per-rank Lightning banners on the terminal: one line per job
    # (torchrun's banner; the busy-machine warning, on a loaded machine, names OMP_NUM_THREADS too)
    assert proc.stderr == "" and "Setting OMP_NUM_THREADS" not in proc.stdout
    assert "Initializing distributed" not in proc.stdout
    assert [line.split(":")[0] for line in terminal(proc.stdout)[:2]] == ["job 1 of 2", "job 2 of 2"]
    assert "Initializing distributed: GLOBAL_RANK: 1" in (Path(runs[2]["run_dir"]) / "bsbench.log").read_text()


def test_a_failing_rank_fails_its_job_and_the_sweep_goes_on(cli):
    proc = cli("-m", "devices=2,1", "strategy=ddp", *SMOKE, "+callbacks.fault._target_=faults.FailOnRank",
               "+callbacks.fault.rank=1", timeout=180)
    assert proc.returncode == 1  # a failed run, reported after every job ran
    runs = {r["devices"]: r for r in cli.results()}
    assert runs[2]["status"] == "failed"
    assert runs[2]["error_type"] == "ValueError" and runs[2]["failed_rank"] == 1
    assert runs[1]["status"] == "ok"  # world size 1 has no rank 1
    assert "failed: devices=2" in (cli.sweep_dir() / "summary.md").read_text()


def test_ddp_spawn_keeps_working(cli):
    proc = cli("devices=2", "strategy=ddp_spawn", *SMOKE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = cli.results()
    assert r["world_size"] == 2 and r["status"] == "ok"
    assert r["train_time_s"] > 0 and r["inference_time_s"] > 0 and r["train_samples_per_s"] > 0


def test_slurm_launcher_maps_devices_and_nodes_to_tasks_and_gpus(tmp_path):
    cfg = composed("hydra/launcher=slurm", "devices=4", "trainer.num_nodes=2", "accelerator=gpu")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    proc = subprocess.run([sys.executable, "-m", "bsbench", "--cfg", "hydra", "hydra/launcher=slurm", "devices=4"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0 and "SlurmLauncher" in proc.stdout


def test_a_sweep_runs_through_submitits_local_executor(cli, monkeypatch):
    # one job (submitit's local executor starts a sweep's jobs at once, each a fresh interpreter): one
    # thread, or OpenMP pools spinning beside the other tests slow every step many times over
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    proc = cli("-m", "batch_size=30", *SMOKE, "hydra/launcher=submitit_local", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["batch_size"] for r in cli.results()] == [30]
    assert (cli.sweep_dir() / ".submitit").is_dir()
    assert "runs the sweep's jobs at the same time on this machine" in proc.stdout + proc.stderr
    assert (cli.sweep_dir() / "summary.md").is_file()


def test_ranks_share_one_process_s_threads_and_an_uneven_split_is_named(monkeypatch, caplog):
    import bsbench.job.ranks as ranks

    monkeypatch.setattr(ranks.torch, "get_num_threads", lambda: 8)
    assert ranks.threads_per_rank(2) == 4 and ranks.threads_per_rank(4) == 2 and not caplog.records
    monkeypatch.setattr(ranks.torch, "get_num_threads", lambda: 3)
    assert ranks.threads_per_rank(2) == 1
    assert "2 ranks cannot share 3 threads evenly: each rank gets 1, 2 in all against 3" in caplog.text


def test_ddp_settings_reach_distributed_data_parallel_on_several_devices_only():
    from lightning.pytorch.strategies import DDPStrategy

    from bsbench.core.config import typed
    from bsbench.job.build import strategy_of

    two = strategy_of(typed(composed(*SMOKE, "devices=2", "ddp.static_graph=true", "ddp.bucket_cap_mb=100")))
    assert isinstance(two, DDPStrategy) and two._ddp_kwargs == {"static_graph": True, "bucket_cap_mb": 100}
    assert strategy_of(typed(composed(*SMOKE, "devices=1", "ddp.static_graph=true"))) == "auto"
    assert strategy_of(typed(composed(*SMOKE, "devices=2"))) == "auto"  # torch's defaults: Lightning's own choice
    # refused in one line where they would not reach DDP, and a tune on several devices needs their count and DDP
    from bsbench.core.errors import UserError
    from bsbench.job.hooks import check

    for overrides, said in [(["strategy=ddp_spawn", "ddp.static_graph=true"], "ddp.static_graph=true is a setting of "
                             "Lightning's DDPStrategy, which strategy=ddp_spawn does not take; use strategy=ddp"),
                            (["mode=tune", "devices=auto"], "mode=tune measures its advice on every device against one "
                             "and needs their count, not devices=auto; use a number"),
                            (["mode=tune", "devices=2", "strategy=ddp_spawn"], "mode=tune on several devices runs every "
                             "rank through the same stages with DDP, which strategy=ddp_spawn does not"),
                            # 256 per device, but each of the two devices has 128 of the 256 images
                            (["mode=tune", "devices=2", "tune.effective_batch=512"], "tune.effective_batch=512 is "
                             "larger than the 256 training images")]:
        with pytest.raises(UserError) as err:
            check(composed(*SMOKE, *overrides), sweep=False)
        assert str(err.value).startswith(said), err.value


def test_a_tune_on_two_devices_says_how_its_advice_scales_and_races_ddps_settings(cli, monkeypatch):
    # the lightning-hydra-template's module (torchmetrics) on bsbench's images (a prepare_data behind Lightning's
    # barrier): rank 0's one-device work must not wait for collectives the other ranks, waiting, never join
    from test_template import TEMPLATE

    module = [o for o in TEMPLATE if o.startswith(("model", "+model.optimizer", "+model.scheduler"))]
    module += ["+model.net={_target_: toy.template.SimpleDenseNet, input_size: 3072, output_size: 10}",
               "+model.num_classes=10"]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # a thread per rank, and the one-device arm rank 0's
    proc = cli(*SMOKE, *module, "data=synthetic", "mode=tune", "devices=2", "budget_min=0.3", "compare.steps=2",
               "compare.warmup_steps=1", "timing.warmup_steps=1", timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = cli.results()
    (summary,) = [r for r in results if r.get("tune_decision")]
    scaling = summary["tune_scaling"]
    assert scaling["devices"] == 2 and 0 < scaling["ci_low"] <= scaling["efficiency"] <= scaling["ci_high"]
    scale = {r["world_size"]: r for r in results if r.get("tune_stage") == "scale"}
    assert sorted(scale) == [1, 2] and scale[1]["compare_setting"] == {**scale[2]["compare_setting"], "devices": 1}
    assert len(scale[1]["round_samples_per_s"]) == len(scale[2]["round_samples_per_s"]) >= 2  # paired rounds
    knobs = [r["compare_setting"] for r in results if r.get("tune_stage") == "knobs"]
    assert {"batch_size": 32, "ddp.static_graph": True} in knobs and {"batch_size": 32, "ddp.bucket_cap_mb": 100} in knobs
    text = next(cli.outputs.rglob("tune.md")).read_text()
    assert "- Scaling: on 2 devices " in text and "scaling efficiency (" in text
    assert "devices=2" in text.split("## To use it")[1]  # the snippet and the command to measure it again
    assert "on 2 devices " in proc.stdout + proc.stderr  # the tune's line
    # one line per tune on the terminal: no rank but 0 speaks
    assert (proc.stdout + proc.stderr).count("tune: stage 6 of 6") == 1


def test_the_one_device_arm_out_of_memory_on_rank_0_leaves_the_race_on_every_rank(monkeypatch):
    # rank 0 trains the scale stage's one-device arm as a process of one, where running out of memory is handled:
    # the other ranks hold the arm too, and drop it with rank 0, or their rounds and collectives would part
    from bsbench.core.fields import Status
    from bsbench.core.config import typed
    from bsbench.job import rounds
    from bsbench.job.runs import tune

    cfg = typed(composed(*SMOKE, "mode=tune", "trainer.default_root_dir=tune"))
    lab = tune.DeviceLab(cfg, "now", {"batch_size": 32}, "job")
    elsewhere = tune.Elsewhere({"batch_size": 32, "devices": 1}, cfg)
    assert elsewhere.live
    monkeypatch.setattr(rounds, "agreed", lambda mine: (Status.OOM, {"error_type": "OutOfMemoryError"}))
    lab._agree_fit(elsewhere)
    assert not elsewhere.live and elsewhere.status == Status.OOM
