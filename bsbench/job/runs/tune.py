"""mode=tune's measurements on the device: the lab that bsbench.core.tuning's procedure runs its stages in.
Each stage's arms are built and warmed up here (bsbench.job.rounds), each of its rounds played here, and
each arm written as a result (`<stage>/<arm>/results.json`, with `busy` as any run's) with a done.json per
finished stage; a stage already done in the tune's folder (resume=) is read back instead of measured
again, and the time the earlier run spent counts against the budget.

On several devices (devices=N, DDP; bsbench.job.ranks starts the ranks, or SLURM) every rank runs the same
procedure: the ranks join one process group before the first stage (Lightning's own, as its DDP makes
it), and every rank takes rank 0's clock, rank 0's rounds and whatever rank 0 read from the folder, so
that every decision is the same on every rank. Rank 0 alone writes, speaks, searches the memory edge on
one device and trains the scale stage's one-device arm while the others wait."""

import json
import logging
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import lightning as L
import torch
from lightning.pytorch.utilities.memory import garbage_collection_cuda
from omegaconf import DictConfig, OmegaConf

from bsbench.core import parts, tuning
from bsbench.core.arms import describe as named
from bsbench.core.arms import folder
from bsbench.core.errors import UserError
from bsbench.core.fields import Status
from bsbench.core.oom import is_oom
from bsbench.core.results import RESULT_FILE, now, read_results, write_json_atomic
from bsbench.job import noise, rounds
from bsbench.job.build import build, strategy_of
from bsbench.job.fit import check_batch, fit
from bsbench.job.identity import job_id
from bsbench.job.record import setup_fields
from bsbench.modes.find_max import find_max
from bsbench.training.environment import describe
from bsbench.training.parts import loader_settings, train_samples

log = logging.getLogger("bsbench")
COMPILED_ARMS = 32  # more than a tune's races hold together


@contextmanager
def alone(really: bool = True):
    """Rank 0's one-device work on several devices (the edge search, the scale stage's one-device arm), as a
    process of one: torch.distributed looks uninitialized to the code inside, so that Lightning (its
    prepare_data barrier) and torchmetrics (their syncs) make no collective call that the other ranks, waiting
    for rank 0's answer, would have to join; and an arm out of memory is one process's, handled as such."""
    if not really:
        yield
        return
    distributed = torch.distributed
    initialized = distributed.is_initialized
    distributed.is_initialized = lambda: False
    try:
        yield
    finally:
        distributed.is_initialized = initialized


class Elsewhere(rounds.Arm):
    """The scale stage's one-device arm on a rank other than 0: rank 0 trains it; here its rounds are rank 0's."""

    left = False

    @property
    def live(self) -> bool:
        return not self.left

    def leave(self) -> None:
        self.left = True


class DeviceLab:
    def __init__(self, cfg: DictConfig, started_at: str, start: dict, job: str, world: int = 1):
        self.cfg, self.started_at, self.start = cfg, started_at, start
        self.dir = Path(OmegaConf.to_container(cfg.trainer, resolve=True).get("default_root_dir") or ".")
        self.job = job  # the tune's job id (bsbench.job.identity), as its command asked for it
        self.objective = cfg.tune.objective
        self.warmed_arms: dict[str, rounds.Arm] = {}  # arms built in this process, by setting, for later stages
        self.device = None
        self.watch: noise.Watch | None = None  # the machine's load while a stage measures (bsbench.job.noise)
        self.recompile_limit: int | None = None
        self.world = world  # the tune's ranks
        self.zero = world == 1 or torch.distributed.get_rank() == 0
        # the scale stage's one-device arm: Lightning's single-device strategy on rank 0's device
        self.one_device = rounds.with_setting(cfg, {"devices": 1, "strategy": "auto", "trainer.num_nodes": 1})

    def clock(self) -> float:
        return rounds.agreed(time.monotonic()) if self.world > 1 else time.monotonic()

    def on_zero(self, work: Callable):
        """`work()` on rank 0, its value (or the UserError it raised) on every rank."""
        if self.world == 1:
            return work()
        outcome = None
        if self.zero:
            try:
                outcome = ("value", work())
            except UserError as err:
                outcome = ("error", str(err))
        kind, value = rounds.agreed(outcome)
        if kind == "error":
            raise UserError(value)
        return value

    def say(self, line: str) -> None:
        if self.zero:
            log.info("%s", line)

    def spent(self) -> float:
        return self.on_zero(self._spent)

    def _spent(self) -> float:
        """The time the runs before this one spent on the stages they finished (resume=)."""
        spent = 0.0
        for marker in self.dir.glob(f"*/{tuning.DONE_FILE}"):
            try:
                elapsed = json.loads(marker.read_text()).get("tune_elapsed_s")
            except (OSError, ValueError):
                continue
            if isinstance(elapsed, (int, float)) and not isinstance(elapsed, bool) and elapsed > 0:
                spent = max(spent, float(elapsed))
        return spent

    # --- stages on disk ---
    def done(self, stage: str) -> list[dict] | None:
        return self.on_zero(lambda: self._done(stage))

    def _done(self, stage: str) -> list[dict] | None:
        """A stage finished in this folder earlier (resume=): its results; a stage begun and not finished
        is removed, to be measured again."""
        where = self.dir / stage
        marker = where / tuning.DONE_FILE
        if marker.is_file():
            try:
                record = json.loads(marker.read_text())
            except (OSError, ValueError):
                record = {}
            if record.get("job_id") != self.job:
                raise UserError(f"resume={self.dir} holds a tune of another configuration; resume it with its own "
                                f"command (see {self.dir / '.hydra' / 'overrides.yaml'}), or tune anew without resume.")
            if record.get("tune_procedure") != tuning.PROCEDURE:
                raise UserError(f"resume={self.dir} holds a tune of an earlier bsbench, whose stages measured other "
                                "things; tune anew without resume.")
            return [r for r in read_results(where) if r.get("tune_stage") == stage]
        if where.exists():
            shutil.rmtree(where)
        return None

    def forget(self, stage: str) -> None:
        if self.zero:
            shutil.rmtree(self.dir / stage, ignore_errors=True)

    def _write(self, stage: str, results: list[dict], elapsed_s: float) -> None:
        if not self.zero:
            return
        for r in results:
            path = Path(r["run_dir"]) / RESULT_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, r)
        write_json_atomic(self.dir / stage / tuning.DONE_FILE, {"job_id": self.job, "stage": stage, "finished_at": now(),
                                                                "tune_elapsed_s": elapsed_s,
                                                                "tune_procedure": tuning.PROCEDURE})

    def common(self) -> dict:
        """What every result of the tune holds besides its own measurement."""
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        return {"mode": "tune", "tune_job_id": self.job, "job_id": None, "started_at": self.started_at,
                "tune_start": self.start, "overrides": [o for o in overrides if not o.startswith("resume=")],
                **describe(self.device or rounds.device_of(self.cfg))}

    # --- 1. the memory edge ---
    def edge(self, seconds: float, costs: tuning.Costs) -> int:
        """On several devices, rank 0's search on one device (DDP keeps the same batch per device), the others
        waiting for its answer."""
        def search() -> int:
            with alone(self.world > 1):
                return self._edge(seconds, costs)

        return self.on_zero(search)

    def _edge(self, seconds: float, costs: tuning.Costs) -> int:
        found = self._done("edge")
        if found:
            return found[0]["max_batch_size"]
        cfg, started = self.one_device if self.world > 1 else self.cfg, time.monotonic()
        self.begin("edge")
        images = train_samples(cfg)  # each device's share of them, on several
        images = images // self.world if images else cfg.find_max.max_val
        share = effective_share(self.cfg)  # a fixed effective batch: no micro-batch beyond one device's share of it
        given = cfg.tune.max_batch_size
        if given is not None and (share is None or given <= share):
            edge, outcome = given, {"find_max_stop": "tune.max_batch_size", "find_max_trials": []}
        elif on_cpu(cfg) or given is not None:
            # the host's memory, or a size said to fit: nothing to search; a batch size too slow for the time is
            # left out
            limits = {"tune.effective_batch": share} if given is not None else \
                {"tune.effective_batch": share, "dataset": images, "max_val": cfg.find_max.max_val}
            stop, edge = min(((k, v) for k, v in limits.items() if v is not None), key=lambda kv: kv[1])
            outcome = {"find_max_stop": stop, "find_max_trials": []}
        else:
            def trial(config: DictConfig) -> None:
                t = time.monotonic()
                self._trial(config)
                costs.add("trial", config.batch_size, time.monotonic() - t)

            # no trial that would, by what the trials so far took, end past the stage's time; none beyond the
            # share of a fixed effective batch (the search's limit, said so where it ended there)
            searched = cfg if share is None or share >= cfg.find_max.max_val else \
                rounds.with_setting(cfg, {"find_max.max_val": share})
            outcome = find_max(searched, trial, images, is_oom, garbage_collection_cuda,
                               more=lambda size: time.monotonic() - started + costs.predict("trial", size) <= seconds,
                               tolerance=tuning.edge_tolerance)
            if searched is not cfg and outcome["find_max_stop"] == "max_val":
                outcome["find_max_stop"] = "tune.effective_batch"
            edge = outcome["max_batch_size"]
            if edge is None:
                raise UserError(f"batch_size={cfg.batch_size} ran out of memory, and so did every smaller batch size "
                                "tried; tune a smaller model or image size, e.g. data.image_size=64.")
        load = self._busy()  # the machine's while the trials ran: none ran on a CPU, and nothing to mark
        result = {**setup_fields(rounds.with_setting(cfg, {"batch_size": edge})), **self.common(), "status": Status.OK,
                  "tune_stage": "edge", "report_row": False, "max_batch_size": edge, **outcome, "finished_at": now(),
                  "run_dir": str(self.dir / "edge"), **(load if outcome["find_max_trials"] else {})}
        self._write("edge", [{**result, **noise.judge(result)}], self._spent() + time.monotonic() - started)
        words = tuning.edge_words(outcome["find_max_stop"], bool(outcome["find_max_trials"]))
        self.say(f"tune: the memory edge: {edge} ({words})")
        return edge

    def _trial(self, trial: DictConfig) -> None:
        # two steps, the second holding the optimizer's state; one batch each (an accumulation adds no memory)
        built = build(rounds.fit_config(rounds.with_setting(trial, {tuning.ACCUMULATE: 1}), 1, 1))
        self.device = built.trainer.strategy.root_device
        fit(built)
        built.timing.collect(built.trainer)
        check_batch(trial.batch_size, built.timing.first_batch_samples, "the edge's search tried")

    # --- 2-5. races ---
    def knobs(self) -> list[dict]:
        return self.on_zero(self._knobs)  # rank 0's cores

    def _knobs(self) -> list[dict]:
        on_cuda = (self.device or rounds.device_of(self.cfg)).type == "cuda"
        bf16 = on_cuda and torch.cuda.is_bf16_supported()
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        # loader workers per rank: each rank's share of its node's cores
        ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE") or 1) if self.world > 1 else 1
        return tuning.knob_settings(self.start, on_cuda, bf16, self.cfg.tune.compile, parts.builds_optimizer(self.cfg),
                                    cores=max(1, cores // ranks_here))

    def ceiling(self) -> dict:
        return {tuning.REPLAY: True}  # bsbench.training.replay, which bsbench.job.build applies

    def begin(self, stage: str) -> None:
        """A stage's measurement starts: the machine's load is watched from here to its results."""
        if self.watch is not None:  # a stage the budget left unmeasured
            self.watch.stop()
        self.watch = noise.Watch().start()

    def _busy(self) -> dict:
        fields = self.watch.stop() if self.watch is not None else {}
        self.watch = None
        return fields

    def warmed(self, setting: dict) -> bool:
        arm = self.warmed_arms.get(named(setting))
        return arm is not None and arm.live

    def warm(self, setting: dict) -> rounds.Arm:
        before = self.warmed_arms.get(named(setting))
        one = self.world > 1 and setting.get("devices") == 1  # the scale stage's one-device arm
        if before is not None and before.live:  # a fresh record of it for this stage, on the same model
            arm = type(before)(setting, before.cfg, before.built, before.first_step_time_s,
                               precision_used=before.precision_used)
        elif one and not self.zero:
            arm = Elsewhere(setting, rounds.with_setting(self.one_device, setting))
        elif one:
            with alone():
                arm = rounds.warm(self.one_device, setting)
        else:
            arm = rounds.warm(self.cfg, setting)
        if one:
            self._agree_fit(arm)
        self.warmed_arms[named(setting)] = arm
        if arm.built is not None:
            self.device = arm.built.trainer.strategy.root_device
        return arm

    def play(self, arm: rounds.Arm) -> None:
        """One round of the arm; on several devices, every rank then holds rank 0's rounds of it."""
        one = self.world > 1 and arm.setting.get("devices") == 1
        if not isinstance(arm, Elsewhere):
            with alone(one):
                rounds.play(arm, self.cfg.compare)
        if self.world > 1:
            arm.rates, arm.round_joules_per_sample = rounds.agreed((arm.rates, arm.round_joules_per_sample))
        if one:
            self._agree_fit(arm)

    def _agree_fit(self, arm: rounds.Arm) -> None:
        """The one-device arm, out of memory on rank 0 (where it ran as a process of one), leaves the race on
        every rank: the ranks' arms stay the same."""
        status, error = rounds.agreed((arm.status, arm.error))
        if status != Status.OK and isinstance(arm, Elsewhere):
            arm.status, arm.error = status, error
            arm.leave()

    def value(self, arm: rounds.Arm) -> list[float]:
        """An arm's rounds as the objective ranks them (larger is better)."""
        if self.objective == "energy":
            return [1 / j for j in arm.round_joules_per_sample if j]
        return arm.rates

    def keep_only(self, settings: list[dict]) -> None:
        """Give back the models of arms no later stage measures."""
        wanted = {named(s) for s in settings}
        for name in [n for n in self.warmed_arms if n not in wanted]:
            del self.warmed_arms[name]
        garbage_collection_cuda()

    def save(self, stage: str, arms: list[rounds.Arm], settings: list[dict], stop: dict, elapsed_s: float) -> list[dict]:
        cfg, busy = self.cfg, self._busy()
        if not self.zero:  # what the procedure decides on, which rank 0 writes: the same rounds on every rank
            return [{"status": arm.status, "tune_stage": stage, "compare_setting": arm.setting,
                     "batch_size": arm.batch_size, "round_samples_per_s": arm.rates,
                     "round_joules_per_sample": arm.round_joules_per_sample} for arm in arms]
        race_id = uuid.uuid4().hex[:12]
        measured = [arm.setting for arm in arms]
        results = []
        for arm in arms:
            world = 1 if arm.setting.get("devices") == 1 else self.world
            r = {**self.common(), **rounds.arm_result(arm, world, cfg.compare), "world_size": world,
                 "status": arm.status, "tune_stage": stage,
                 "compare_id": race_id, "compare_setting": arm.setting, "compare_settings": measured,
                 "tune_not_measured": [s for s in settings if s not in measured], "compare_stop": stop,
                 "compile_recompile_limit": self.recompile_limit, "finished_at": now(), "config": OmegaConf.to_container(arm.cfg, resolve=True),
                 "run_dir": str(self.dir / stage / folder(arm.setting)), **busy}
            r = rounds.arm_flops(arm, r)
            results.append({**r, **noise.judge(r)})
        self._write(stage, results, elapsed_s)
        busy = next((r for r in results if r.get("busy")), None)
        if busy is not None:
            self.say(f"tune: warning: the {stage} race was measured on a busy machine ({busy['busy_reason']}); "
                     "its intervals are wider and tune.md marks it")
        return results


def on_cpu(cfg: DictConfig) -> bool:
    """Whether the tune trains on the CPU, whose memory is the host's: no device memory to run out of."""
    accelerator = str(cfg.accelerator)
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()
                                    and not torch.backends.mps.is_available())


def effective_share(cfg: DictConfig) -> int | None:
    """One device's share of tune.effective_batch (None: the batch size is free)."""
    if cfg.tune.effective_batch is None:
        return None
    return cfg.tune.effective_batch // (cfg.devices * cfg.trainer.num_nodes)


def start_of(cfg: DictConfig, world: int = 1) -> dict:
    """The starting settings a tune measures changes against: batch_size (with its accumulation, where the
    effective batch is kept) and every knob's value (DDP's settings on several devices)."""
    start = {"batch_size": cfg.batch_size}
    if cfg.tune.effective_batch is not None:
        start[tuning.ACCUMULATE] = cfg.trainer.accumulate_grad_batches
    start |= {"precision": str(cfg.precision), "channels_last": cfg.channels_last, "compile": cfg.compile}
    if parts.builds_optimizer(cfg):  # a module of the user's builds its own
        start["model.fused_adam"] = cfg.model.fused_adam
    ddp = {key: cfg.ddp[key.split(".", 1)[1]] for key in tuning.DDP_KNOBS} if world > 1 else {}
    return {**start, **loader_settings(cfg), **ddp}


def join_ranks(cfg: DictConfig) -> int:
    """The tune's ranks in one process group before its first stage, made by Lightning's DDP strategy as every
    round's Trainer would make it (the backend for the device, torchrun's or SLURM's environment), which then
    finds it made: how many ranks there are (1 on one device)."""
    if cfg.devices == 1 and cfg.trainer.num_nodes == 1:
        return 1
    if not torch.distributed.is_initialized():
        trainer = L.Trainer(accelerator=cfg.accelerator, devices=cfg.devices, strategy=strategy_of(cfg),
                            num_nodes=cfg.trainer.num_nodes, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.strategy.setup_environment()
    return torch.distributed.get_world_size()


def run(cfg: DictConfig, started_at: str) -> dict | None:
    """The tune's summary result, on rank 0 (None on the other ranks)."""
    job = job_id(cfg)
    world = join_ranks(cfg)
    lead = world == 1 or torch.distributed.get_rank() == 0
    ran = rounds.precision_that_runs(cfg)
    if ran != str(cfg.precision):  # a tune starts from what runs: its knobs and its advice are changes of that
        if lead:
            log.warning("precision=%s runs as %s on this device, so the tune starts from precision=%s", cfg.precision,
                        ran, ran)
        cfg = cfg.copy()
        cfg.precision = ran
    share = effective_share(cfg)
    if share is not None and cfg.batch_size * cfg.trainer.accumulate_grad_batches != share:
        # batch_size divides the share (bsbench.modes.tune checked it): the accumulation that makes it
        cfg = rounds.with_setting(cfg, {tuning.ACCUMULATE: share // cfg.batch_size})
        if lead:
            log.info("tune: your settings make tune.effective_batch=%d as batch_size=%d with "
                     "trainer.accumulate_grad_batches=%d", cfg.tune.effective_batch, cfg.batch_size,
                     cfg.trainer.accumulate_grad_batches)
    start = start_of(cfg, world)
    lab = DeviceLab(cfg, started_at, start, job, world)
    spec = tuning.Spec(start=start, budget_min=cfg.budget_min, grid_points=cfg.tune.grid_points,
                       objective=cfg.tune.objective, target_ci=cfg.target_ci, cap=cfg.compare.rounds,
                       effective_batch=cfg.tune.effective_batch, world_size=world)
    compiled = cfg.compile or cfg.tune.compile
    try:  # a compiled arm per batch size, precision and memory format: room for the graphs of all of them
        with rounds.quiet_lightning(), rounds.recompile_room(COMPILED_ARMS if compiled else 0) as limit:
            lab.recompile_limit = limit
            found = tuning.run(lab, spec)
    finally:
        if lab.watch is not None:
            lab.watch.stop()
        lab.keep_only([])
    if not lead:
        return None
    return {
        "status": Status.OK,
        **setup_fields(cfg),
        **lab.common(),
        "job_id": job,
        "report_row": False,  # it measured nothing itself: its stages' results are the runs
        **found,
        "finished_at": now(),
    }
