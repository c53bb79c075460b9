"""mode=tune (conf/mode/tune.yaml): the fastest way to train the configured model on this device within
`budget_min`, and what matters for it. The procedure, its stages and its decision rule are
bsbench.core.tuning's (no torch: the report and the tests' simulations run the same code); the
measurements on the device are bsbench.job.runs.tune's. Every arm of every stage is a result in
`<stage>/<arm>/results.json` under the tune's folder, with a `done.json` per finished stage;
`resume=<the tune's folder>` goes on from the first stage without one. The report
(bsbench.report.tune) derives tune.md, the ranked "what matters" table and the plot from those results."""

import json
from pathlib import Path

from omegaconf import OmegaConf

from bsbench.core.arms import text
from bsbench.core.errors import UserError
from bsbench.core.fields import Status
from bsbench.core.tuning import CHANGE, DONE_FILE, PROCEDURE, RESOLVES, SMALLEST
from bsbench.modes.base import Mode, failure, model_chosen, with_progress


class Tune(Mode):
    name = "tune"
    sections = ("tune",)
    own_rounds = True
    reports_single_run = True
    resumes_single_run = True

    def check(self, cfg, here):
        if cfg.budget_min is None:
            raise UserError("mode=tune needs a time budget, budget_min=null gives it none; use e.g. budget_min=10.")
        # unresolved: before the job runs, Hydra's ${hydra:runtime.output_dir} has no value yet
        if OmegaConf.to_container(cfg.trainer, resolve=False).get("default_root_dir") is None:
            raise UserError("mode=tune writes its stages under trainer.default_root_dir, which is null; use its "
                            "default (the run's own directory) or a directory, e.g. trainer.default_root_dir=runs.")
        devices = cfg.devices
        if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
            raise UserError(f"mode=tune measures its advice on every device against one and needs their count, not "
                            f"devices={devices}; use a number, e.g. devices=1 or devices=2.")
        if _world(cfg) > 1 and str(cfg.strategy) not in ("auto", "ddp"):
            raise UserError(f"mode=tune on several devices runs every rank through the same stages with DDP, which "
                            f"strategy={cfg.strategy} does not; use strategy=ddp (or auto).")
        if cfg.tune.effective_batch is not None:
            check_effective_batch(cfg)

    def full_batches(self, cfg):
        """A fixed effective batch: each device's share of it is one epoch's batches at most (an accumulation
        cut short by the epoch's end would step on fewer samples than it), so all of it fits in the training
        images that the devices share."""
        batches = super().full_batches(cfg)
        if cfg.tune.effective_batch is not None:
            batches.append((cfg.tune.effective_batch, f"tune.effective_batch={cfg.tune.effective_batch}"))
        return batches

    def energy(self, cfg):
        if cfg.tune.objective == "energy":
            return "tune.objective=energy ranks by joules per image", "tune.objective=time"
        return None

    def check_resume(self, cfg, path, job: str) -> None:
        """resume=<a tune's folder> with another configuration (another job id) would mix two tunes'
        stages: refused before anything is written there (Hydra rewrites the folder's .hydra/ when the run
        starts)."""
        recorded, procedures = set(), set()
        for marker in Path(path).glob(f"*/{DONE_FILE}"):
            try:
                record = json.loads(marker.read_text())
            except (OSError, ValueError):
                continue
            recorded.add(record.get("job_id"))
            procedures.add(record.get("tune_procedure"))
        if procedures - {PROCEDURE}:
            raise UserError(f"resume={path} holds a tune of an earlier bsbench, whose stages measured other things; "
                            "tune anew without resume.")
        if recorded and recorded != {job}:
            raise UserError(f"resume={path} holds a tune of another configuration; resume it with its own command "
                            f"(its overrides are in {Path(path) / '.hydra' / 'overrides.yaml'}), or tune anew "
                            "without resume.")

    def folder(self, cfg):
        return f"tune{cfg.batch_size}"

    def line(self, r, progress):
        what = f"tune from batch_size={r['batch_size']}{model_chosen(r)} precision={r['precision']}"
        if r["status"] != Status.OK:
            return with_progress(f"{what}: {failure(r)}", progress)
        speedup = r.get("tune_speedup") or {}
        if r.get("tune_decision") == CHANGE:
            best = " ".join(f"{k}={text(v)}" for k, v in (r.get("tune_best") or {}).items())
            shown = f"change to {best}"
            if speedup.get("ci_low") is not None:
                shown += f", {speedup['ratio']:+.1%} ({speedup['ci_low']:+.1%} to {speedup['ci_high']:+.1%}) against yours"
            elif speedup.get("reason"):
                shown += f" ({speedup['reason']})"
        else:
            shown = "keep your settings: nothing measured was clearly faster"
            detectable = (r.get("tune_resolution") or {}).get("detectable")
            if detectable is not None and detectable > RESOLVES:
                shown += " (too few or too noisy rounds to resolve even a twofold difference)"
            elif detectable is not None:
                shown += f" (a difference beyond ±{detectable:.1%} would have shown)"
        scaled = scaling_words(r.get("tune_scaling"))
        return with_progress(f"{what}: {shown}" + (f"; {scaled}" if scaled else ""), progress)


def scaling_words(scaling: dict | None) -> str | None:
    """A tune's scaling on several devices, in words (the terminal's line and tune.md's)."""
    if not isinstance(scaling, dict) or not isinstance(scaling.get("devices"), int):
        return None
    n = scaling["devices"]
    if scaling.get("efficiency") is None:
        return f"on {n} devices against one: not measured ({scaling.get('reason') or 'no interval'})"
    if scaling.get("ci_low") is None:
        return f"on {n} devices {scaling['speedup']:.2f}x one device's samples/s: not resolved (one round, no interval)"
    return (f"on {n} devices {scaling['speedup']:.2f}x one device's samples/s at the same batch per device: "
            f"{scaling['efficiency']:.0%} scaling efficiency ({scaling['ci_low']:.0%} to {scaling['ci_high']:.0%}, "
            f"95%)")


def _world(cfg) -> int:
    return cfg.devices * cfg.trainer.num_nodes


def check_effective_batch(cfg) -> None:
    """tune.effective_batch=N: your settings make it (batch_size x trainer.accumulate_grad_batches x the
    devices), or batch_size divides it and the tune sets the accumulation (from 1, its default); else one
    sentence saying what would."""
    n, world, batch, accumulate = cfg.tune.effective_batch, _world(cfg), cfg.batch_size, \
        cfg.trainer.accumulate_grad_batches
    devices = f" × {world} devices" if world > 1 else ""
    if n % world:
        raise UserError(f"tune.effective_batch={n} does not split evenly over {world} devices; use a multiple of "
                        f"{world}, e.g. tune.effective_batch={max(world, n - n % world)}.")
    share = n // world
    if share < SMALLEST:
        raise UserError(f"tune.effective_batch={n} leaves fewer than {SMALLEST} samples per device and step (batch "
                        f"normalization needs two); use at least tune.effective_batch={SMALLEST * world}.")
    if batch * accumulate == share or (accumulate == 1 and share % batch == 0):
        return
    divisor = max(b for b in range(1, min(batch, share) + 1) if share % b == 0)
    raise UserError(f"tune.effective_batch={n} is not made by batch_size={batch} × "
                    f"trainer.accumulate_grad_batches={accumulate}{devices}, which the tune starts from; use a "
                    f"batch_size that divides {share} (e.g. batch_size={divisor}) with trainer.accumulate_grad_batches=1 "
                    "(the tune sets it), or the two that make it.")


MODE = Tune()
