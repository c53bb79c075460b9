"""mode=compare's run (bsbench.modes.compare): the arms warmed up, then paired rounds until the
comparisons are as precise as asked, the budget is spent, or the cap is reached."""

import uuid

from omegaconf import DictConfig

from bsbench.core.arms import comparisons
from bsbench.core.fields import Status
from bsbench.core.results import now
from bsbench.job import rounds
from bsbench.job.record import setup_fields
from bsbench.modes.compare import arm_settings
from bsbench.training.environment import describe


def run(cfg: DictConfig, started_at: str) -> dict | None:
    """Measure the compared arms in rounds. Returns the job's result, with one result per arm under
    `arms`, on global rank 0."""
    spec = cfg.compare
    settings = arm_settings(spec, cfg.batch_size)
    pairs = comparisons(settings, bool(spec.settings))
    compiled = sum(bool(rounds.with_setting(cfg, s).compile) for s in settings)
    with rounds.recompile_room(compiled) as limit:
        arms = [rounds.warm(cfg, s) for s in settings]
        budget_s = cfg.budget_min * 60 if cfg.budget_min is not None else None
        stop = rounds.race(arms, spec, lambda arms, table: pairs, cap=spec.rounds, target_ci=cfg.target_ci,
                           budget_s=budget_s, min_rounds=2 * len(arms))
    trainer = next((arm.built.trainer for arm in arms if arm.built is not None), None)
    if trainer is not None and not trainer.is_global_zero:
        return None
    world_size = trainer.world_size if trainer is not None else 1
    whole = {
        "status": Status.OK if trainer is not None else Status.OOM,
        **setup_fields(cfg),
        "compare_id": uuid.uuid4().hex[:12],
        "compare_batch_sizes": sorted({s["batch_size"] for s in settings}),
        "compare_settings": settings,
        "compare_stop": stop,
        "compile_recompile_limit": limit,
        "precision_used": str(trainer.precision) if trainer is not None else None,
        "world_size": world_size,
        "num_nodes": trainer.num_nodes if trainer is not None else cfg.trainer.num_nodes,
        "started_at": started_at,
        "finished_at": now(),
        **describe(trainer.strategy.root_device if trainer is not None else rounds.device_of(cfg)),
    }
    # each arm with its FLOPs and MFU, counted with the job's device known (a real warm-up step's count where
    # the meta device cannot run the user's module)
    whole["arms"] = []
    for arm in arms:
        own = rounds.arm_result(arm, world_size, spec)
        counted = rounds.arm_flops(arm, {**whole, **own})
        whole["arms"].append({k: v for k, v in counted.items() if k in own or k not in whole})
    return whole
