"""mode=tune's run (the stages are described in bsbench.modes.tune): each stage measures, writes its
arms' results and a done.json, and hands the next stage what it found; a stage already done in the
tune's folder (resume=) is read back instead of measured again."""

import shutil
import time
import uuid
from pathlib import Path

import torch
from lightning.pytorch.utilities.memory import garbage_collection_cuda
from omegaconf import DictConfig, OmegaConf

from bsbench.core import parts
from bsbench.core.errors import UserError
from bsbench.core.fields import Status
from bsbench.core.identity import job_id
from bsbench.core.oom import is_oom
from bsbench.core.results import RESULT_FILE, now, read_results, setup_fields, write_json_atomic
from bsbench.job import rounds
from bsbench.job.build import build
from bsbench.job.run import fit, with_utilization
from bsbench.modes import tune
from bsbench.modes.compare import describe as named
from bsbench.modes.compare import folder
from bsbench.modes.find_max import find_max
from bsbench.report.stats import describe as statistics
from bsbench.report.stats import paired
from bsbench.training.environment import describe


class Tuner:
    def __init__(self, cfg: DictConfig, started_at: str):
        self.cfg, self.started_at = cfg, started_at
        self.dir = Path(OmegaConf.to_container(cfg.trainer, resolve=True).get("default_root_dir") or ".")
        self.job = job_id(cfg)
        self.t0 = time.monotonic()
        self.budget_s = cfg.budget_min * 60
        self.start = {"batch_size": cfg.batch_size, "precision": str(cfg.precision), "channels_last": cfg.channels_last,
                      "compile": cfg.compile}
        if parts.builds_optimizer(cfg):  # a module of the user's builds its own
            self.start["model.fused_adam"] = cfg.model.fused_adam
        self.warmed: dict[str, rounds.Arm] = {}  # arms built in this process, by setting, for later stages
        self.device = None
        self.objective = cfg.tune.objective
        self.skipped: list[str] = []  # stages the budget left no time for

    def value(self, arm: rounds.Arm) -> list[float]:
        """An arm's rounds as the objective ranks them (larger is better)."""
        if self.objective == "energy":
            return [1 / j for j in arm.round_joules_per_sample if j]
        return arm.rates

    # --- time ---
    def deadline(self, stage: str) -> float:
        """When a stage must end: its share and every earlier stage's, from the tune's start."""
        shares = list(tune.SHARES.values())
        return self.t0 + self.budget_s * sum(shares[: tune.STAGES.index(stage) + 1])

    def left(self, stage: str) -> float:
        return max(0.0, self.deadline(stage) - time.monotonic())

    def spent(self) -> bool:
        """The whole budget is spent: no further stage starts (resume= with a larger budget_min runs it)."""
        return time.monotonic() >= self.t0 + self.budget_s

    # --- stages on disk ---
    def done(self, stage: str) -> list[dict] | None:
        """A stage finished in this folder earlier (resume=): its results; a stage begun and not
        finished is removed, to be measured again."""
        where = self.dir / stage
        marker = where / tune.DONE_FILE
        if marker.is_file():
            import json

            try:
                record = json.loads(marker.read_text())
            except (OSError, ValueError):
                record = {}
            if record.get("job_id") != self.job:
                raise UserError(f"resume={self.dir} holds a tune of another configuration; resume it with its own "
                                f"command (see {self.dir / '.hydra' / 'overrides.yaml'}), or tune anew without resume.")
            return [r for r in read_results(where) if r.get("tune_stage") == stage]
        if where.exists():
            shutil.rmtree(where)
        return None

    def save(self, stage: str, results: list[dict]) -> None:
        for r in results:
            path = Path(r["run_dir"]) / RESULT_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, r)
        write_json_atomic(self.dir / stage / tune.DONE_FILE, {"job_id": self.job, "stage": stage, "finished_at": now()})

    def common(self) -> dict:
        """What every result of the tune holds besides its own measurement."""
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        return {"mode": "tune", "tune_job_id": self.job, "job_id": None, "started_at": self.started_at,
                "tune_start": self.start,
                "overrides": [o for o in overrides if not o.startswith("resume=")],
                **describe(self.device or rounds.device_of(self.cfg))}

    # --- 1. the memory edge ---
    def edge(self) -> int:
        found = self.done("edge")
        if found:
            return found[0]["max_batch_size"]
        cfg = self.cfg
        if cfg.tune.max_batch_size is not None:
            edge, outcome = cfg.tune.max_batch_size, {"find_max_stop": "tune.max_batch_size", "find_max_trials": []}
        else:
            from bsbench.training.parts import train_samples

            outcome = find_max(cfg, self._trial, train_samples(cfg) or cfg.find_max.max_val, is_oom,
                               garbage_collection_cuda,
                               more=lambda: self.left("edge") > 0, tolerance=tune.edge_tolerance)
            edge = outcome["max_batch_size"]
            if edge is None:
                raise UserError(f"batch_size={cfg.batch_size} ran out of memory, and so did every smaller batch size "
                                "tried; tune a smaller model or image size, e.g. data.image_size=64.")
        result = {**setup_fields(with_batch(cfg, edge)), **self.common(), "status": Status.OK, "tune_stage": "edge",
                  "report_row": False, "max_batch_size": edge, **outcome, "finished_at": now(),
                  "run_dir": str(self.dir / "edge")}
        self.save("edge", [result])
        return edge

    def _trial(self, trial: DictConfig) -> None:
        built = build(rounds.fit_config(trial, 1, 1))  # two steps: the second holds the optimizer's state
        self.device = built.trainer.strategy.root_device
        fit(built)

    # --- 2-5. races ---
    def race(self, stage: str, settings: list[dict], pairs, eliminate: bool) -> list[dict]:
        """Measure `settings` against each other until the stage's deadline, its target or its cap;
        returns their results (read back where the stage was done before)."""
        found = self.done(stage)
        if found is not None:
            order = {named(s): i for i, s in enumerate(settings)}
            return sorted(found, key=lambda r: order.get(named(r["compare_setting"]), len(order)))
        if self.spent():
            self.skipped.append(stage)
            return []
        cfg = self.cfg
        arms = []
        for setting in settings:
            arm = self.warmed.get(named(setting))
            arms.append(rounds.Arm(setting, arm.cfg, arm.built, arm.first_step_time_s, precision_used=arm.precision_used)
                        if arm is not None and arm.live else rounds.warm(cfg, setting))
            self.warmed[named(setting)] = arms[-1]
            if arms[-1].built is not None:
                self.device = arms[-1].built.trainer.strategy.root_device

        def drop(arms):
            gone = tune.clearly_slower([self.value(a) for a in arms], [a.live for a in arms]) if eliminate else []
            return [arms[i] for i in gone]

        compiled = sum(bool(a.cfg.compile) for a in arms)
        with rounds.recompile_room(compiled) as limit:
            stop = rounds.race(arms, cfg.compare, pairs, cap=cfg.compare.rounds, target_ci=cfg.target_ci,
                               budget_s=self.left(stage), min_rounds=tune.MIN_ROUNDS, eliminate=drop, label=stage,
                               value=self.value, budget_after=2,
                               hard_s=self.t0 + self.budget_s - time.monotonic())
        race_id = uuid.uuid4().hex[:12]
        results = []
        for arm in arms:
            r = {**self.common(), **rounds.arm_result(arm, 1, cfg.compare), "status": arm.status, "tune_stage": stage,
                 "compare_id": race_id, "compare_setting": arm.setting, "compare_settings": settings,
                 "compare_stop": stop, "compile_recompile_limit": limit, "finished_at": now(),
                 "config": OmegaConf.to_container(arm.cfg, resolve=True), "run_dir": str(self.dir / stage / folder(arm.setting))}
            results.append(with_utilization(arm.cfg, r))
        self.save(stage, results)
        return results

    def against_leader(self, arms) -> list[tuple[int, int]]:
        live = [i for i, a in enumerate(arms) if a.live and self.value(a)]
        if len(live) < 2:
            return []
        lead = max(live, key=lambda i: tune.mean_log(self.value(arms[i])))
        return [(i, lead) for i in live if i != lead]

    def keep_only(self, settings: list[dict]) -> None:
        """Give back the models of arms no later stage measures."""
        wanted = {named(s) for s in settings}
        for name in [n for n in self.warmed if n not in wanted]:
            del self.warmed[name]
        garbage_collection_cuda()


def with_batch(cfg: DictConfig, batch_size: int) -> DictConfig:
    return rounds.with_setting(cfg, {"batch_size": batch_size})


def leader_of(results: list[dict], objective: str) -> int:
    """The best batch size of a batch race (ok arms only)."""
    ok = [r for r in results if r.get("status") == Status.OK and tune.values(r, objective)]
    if not ok:
        raise RuntimeError("no batch size of the race was measured (every one ran out of memory)")
    return ok[tune.fastest([tune.values(r, objective) for r in ok])]["batch_size"]


def run_tune(cfg: DictConfig, started_at: str) -> dict:
    t = Tuner(cfg, started_at)
    start = t.start
    edge = t.edge()
    at = lambda b: {"batch_size": b}  # noqa: E731 - an arm of the batch races: the start's settings at b

    grid = tune.grid(edge, cfg.tune.grid_points, start["batch_size"])
    objective = cfg.tune.objective
    first = t.race("batch", [at(b) for b in grid], t.against_leader, eliminate=True)
    leader = leader_of(first, objective) if first else min(start["batch_size"], edge)
    near_sizes = tune.neighbourhood(leader, edge, start["batch_size"])
    raced = [r for r in first if r.get("status") == Status.OK and tune.values(r, objective)]
    if raced:  # the grid's sizes as fast as its leader as far as the rounds could tell: raced again
        kept = tune.contenders([tune.values(r, objective) for r in raced])
        near_sizes = sorted(set(near_sizes) | {raced[i]["batch_size"] for i in kept})
    t.keep_only([at(b) for b in near_sizes])
    near = t.race("near", [at(b) for b in near_sizes], t.against_leader, eliminate=True)
    leader = leader_of(near, objective) if near else leader

    on_cuda = (t.device or rounds.device_of(cfg)).type == "cuda"
    bf16 = on_cuda and torch.cuda.is_bf16_supported()
    knobs = tune.knob_settings(start, on_cuda, bf16, cfg.tune.compile, parts.builds_optimizer(cfg))
    t.keep_only([at(leader), at(start["batch_size"])])
    knob_arms = [at(leader)] + [{**at(leader), **k} for k in knobs]
    measured = t.race("knobs", knob_arms, lambda arms: [(i, 0) for i in range(1, len(arms))], eliminate=False)
    measured = measured or [{}]  # the budget spent before the knobs: none measured
    base_values = tune.values(measured[0], objective)
    effects = [paired(tune.values(r, objective), base_values) if tune.values(r, objective) and base_values
               else {"ratio": None, "ci_low": None} for r in measured[1:]]
    best = {**at(leader), **tune.combination(knobs, effects)}

    t.keep_only([at(start["batch_size"]), best])
    speedup = {"ratio": 0.0, "ci_low": None, "ci_high": None}
    best_rates = measured[0].get("round_samples_per_s") if best == at(leader) else None
    if named(best) != named(at(start["batch_size"])):
        if start["batch_size"] > edge:
            speedup = {"ratio": None, "ci_low": None, "ci_high": None,
                       "reason": f"batch_size={start['batch_size']} is above the memory edge, {edge}"}
            confirmed = t.race("confirm", [best], lambda arms: [], eliminate=False) or [{}]
            best_rates = confirmed[0].get("round_samples_per_s")
        else:
            confirmed = t.race("confirm", [at(start["batch_size"]), best], lambda arms: [(1, 0)], eliminate=False)
            if not confirmed:
                speedup = {"ratio": None, "reason": "the budget was spent before the confirmation; resume with a larger "
                                                    "budget_min"}
                confirmed = [{}, {}]
            elif all(tune.values(r, objective) for r in confirmed):
                speedup = paired(tune.values(confirmed[1], objective), tune.values(confirmed[0], objective))
            best_rates = confirmed[1].get("round_samples_per_s")
    rate = statistics(best_rates or [], log=True)
    t.keep_only([])
    return {
        "status": Status.OK,
        **setup_fields(cfg),
        **t.common(),
        "job_id": job_id(cfg),
        "report_row": False,  # it measured nothing itself: its stages' results are the runs
        "tune_edge": edge,
        "tune_best": {k: v for k, v in best.items()},
        "tune_start": start,
        "tune_best_samples_per_s": rate["mean"],
        "tune_best_ci": [rate["ci_low"], rate["ci_high"]],
        "tune_speedup": {k: speedup.get(k) for k in ("ratio", "ci_low", "ci_high", "reason")},
        "tune_elapsed_s": time.monotonic() - t.t0,
        "tune_skipped": t.skipped,
        "finished_at": now(),
    }
