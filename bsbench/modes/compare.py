"""mode=compare (conf/mode/compare.yaml): settings measured against each other in paired rounds in one
process (bsbench.job.rounds), the most precise answer per minute of device time.

What is compared are arms: `compare.batch_sizes=[511,512,513]` (each batch size an arm), or
`compare.settings=[{channels_last:false},{channels_last:true}]` (each set of overrides an arm, at
`batch_size` or at its own `batch_size` key), or both (every setting at every batch size). The keys a
setting may hold are ALLOWED; each arm gets its own config, model, datamodule, result folder and
result. Rounds go on until every comparison's 95% interval is within `target_ci`, another round would
pass `budget_min`, or `compare.rounds` have run (bsbench.core.stopping). The comparisons: each power
of two or multiple of 8 against its neighbours among an arm's batch sizes (the verdict's question),
and each setting against the first setting at the same batch size."""

from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bsbench.core import parts
from bsbench.core.arms import arm_names, comparisons, describe, folder, neighbour_pairs, varying
from bsbench.core.config import type_error
from bsbench.core.errors import UserError
from bsbench.core.fields import Status
from bsbench.core.stats import Race, half_width
from bsbench.modes.base import Mode, failure, model_chosen, with_progress

# what a compared setting may change: what a model, its data and its Trainer are rebuilt from for each arm
ALLOWED = ("batch_size", "precision", "channels_last", "matmul_precision", "model.fused_adam", "compile")
# the result field each allowed key is recorded in (bsbench.job.record.setup_fields)
RECORDED_AS = {"model.fused_adam": "fused_adam"}
REFUSED = {"cudnn_benchmark": "cuDNN's plan cache is process-wide and its key ignores the flag, so whichever setting "
                              "runs first picks the convolution algorithms for both; sweep it as separate runs "
                              "instead, e.g. -m cudnn_benchmark=false,true"}


def arm_settings(spec, batch_size: int) -> list[dict]:
    """The compared arms, each as the keys that make it (batch_size first): the batch sizes, the
    settings at `batch_size` (or their own), or every setting at every batch size."""
    sizes = list(spec.get("batch_sizes") or [])
    settings = [dict(s) for s in spec.get("settings") or []]
    if not settings:
        return [{"batch_size": b} for b in sizes]
    if not sizes:
        return [{"batch_size": s.pop("batch_size", batch_size), **s} for s in settings]
    return [{"batch_size": b, **s} for s in settings for b in sizes]


def config_with(config: dict, setting: dict) -> dict:
    """A plain config (a result's) with an arm's keys set."""
    out = {**config}
    for key, value in setting.items():
        *sections, last = key.split(".")
        node = out
        for section in sections:
            node[section] = {**(node.get(section) or {})}
            node = node[section]
        node[last] = value
    return out


def _check_settings(cfg) -> None:
    """compare.settings as settings: each a mapping of keys compare can vary, two or more that differ."""
    spec = cfg.compare
    for i, setting in enumerate(spec.settings):
        if not setting:
            raise UserError(f"compare.settings[{i}] is empty; give each setting the keys it changes, e.g. "
                            "compare.settings=[{channels_last:false},{channels_last:true}].")
        for key in setting:
            if key in REFUSED:
                raise UserError(f"compare.settings cannot vary {key}: {REFUSED[key]}.")
            if key not in ALLOWED:
                raise UserError(f"compare.settings[{i}] holds {key}, which compare cannot vary; use keys from: "
                                f"{', '.join(ALLOWED)}.")
            if key == "model.fused_adam" and not parts.builds_optimizer(cfg):
                raise UserError(f"compare.settings[{i}] holds model.fused_adam, and model._target_="
                                f"{parts.target(cfg, 'model')}'s configure_optimizers builds its own optimizer; "
                                "sweep an argument of your module instead, e.g. -m +model.fused=false,true.")
        if "batch_size" in setting and spec.batch_sizes:
            raise UserError(f"compare.settings[{i}] sets batch_size and compare.batch_sizes sets them too; use one "
                            "of the two.")
    arms = arm_settings(spec, cfg.batch_size)
    if len(arms) < 2 or len({describe(a) for a in arms}) != len(arms):
        raise UserError(f"compare.settings={OmegaConf.to_container(spec.settings)} needs two or more different "
                        "settings; use e.g. compare.settings=[{channels_last:false},{channels_last:true}].")


class Compare(Mode):
    name = "compare"
    own_rounds = True
    reports_single_run = True

    def check(self, cfg, here):
        spec = cfg.compare
        if spec.settings:
            _check_settings(cfg)
        else:
            sizes = list(spec.batch_sizes)
            shown = f"compare.batch_sizes=[{','.join(map(str, sizes))}]"
            if len(sizes) < 2 or len(set(sizes)) != len(sizes) or min(sizes) < 1:
                raise UserError(f"{shown} needs two or more different positive batch sizes; use e.g. "
                                "compare.batch_sizes=[511,512,513], or compare.settings=[...].")
            if not neighbour_pairs(sizes):
                raise UserError(f"{shown} holds no power of two or multiple of 8 to compare with its neighbours; "
                                "add one, e.g. compare.batch_sizes=[511,512,513].")
        if str(cfg.strategy).startswith("ddp_spawn"):
            raise UserError(f"mode=compare keeps every arm's model in this process between rounds, which "
                            f"strategy={cfg.strategy} cannot (it trains in child processes); use strategy=ddp.")

    def full_batches(self, cfg):
        if cfg.compare.settings:
            return []  # each arm's own, checked with the arm (arms)
        return [(b, f"compare.batch_sizes holds {b}, which") for b in cfg.compare.batch_sizes]

    def arms(self, cfg):
        """Each setting's config, checked as a run of its own (its batch size's full batch included)."""
        if not cfg.compare.settings:
            return []
        out = []
        for setting in arm_settings(cfg.compare, cfg.batch_size):
            arm = cfg.copy()
            for key, value in setting.items():
                try:
                    OmegaConf.update(arm, key, value, merge=False)
                except OmegaConfBaseException:
                    raise UserError(f"compare.settings: {type_error(key, value)}") from None
            out.append((f"compare.settings, the setting {describe(setting)}", arm))
        return out

    def unused(self, cfg):
        # a comparison of batch sizes does not run `batch_size` (job ids from before settings stay)
        return ("batch_size",) if cfg.compare.batch_sizes else ()

    def folder(self, cfg):
        arms = arm_settings(cfg.compare, cfg.batch_size)
        sizes = sorted({a["batch_size"] for a in arms}) or [cfg.batch_size]
        return f"cmp{min(sizes)}-{max(sizes)}" if len(sizes) > 1 else f"cmp{sizes[0]}x{len(arms)}"

    def results(self, result):
        """One result per arm, in its own folder under the job's, with its setting in its config and
        fields. A compare job that did not finish gives every arm its status."""
        config = result.get("config") or {}
        settings = arm_settings(config.get("compare") or {}, config.get("batch_size"))
        arms = result.get("arms") or [
            {"batch_size": s["batch_size"], **{RECORDED_AS.get(k, k): v for k, v in s.items() if "." not in k
                                               or k in RECORDED_AS}} for s in settings]
        common = {key: value for key, value in result.items() if key != "arms"}
        return [{**common, **arm, "compare_setting": setting, "config": config_with(config, setting),
                 "run_dir": str(Path(result["run_dir"]) / folder(setting))} for arm, setting in zip(arms, settings)]

    def result_line(self, r, progress):
        return Mode.line(self, {**r, "batch_size": describe(r.get("compare_setting") or {"batch_size": r["batch_size"]})
                                .removeprefix("batch_size=")}, progress)

    def line(self, r, progress):
        """Each arm's rate, each comparison with its interval, what ended the rounds."""
        config = r.get("config") or {}
        settings = arm_settings(config.get("compare") or {}, config.get("batch_size"))
        keys = varying(settings)
        names = arm_names(settings)
        setup = f"compare {', '.join(names)}{model_chosen(r)} precision={r.get('precision_used') or r['precision']}"
        if "precision" in keys:
            setup = setup.rsplit(" precision=", 1)[0]
        if (r.get("world_size") or 1) > 1:
            setup += f" world_size={r['world_size']}"
        if r["status"] != Status.OK:
            return with_progress(f"{setup}: {failure(r)}", progress)
        arms = r["arms"]
        shown = ", ".join(f"{n}: {a['train_samples_per_s']:.0f}" if a.get("train_samples_per_s") else f"{n}: "
                          f"{a.get('status', 'no rate')}" for n, a in zip(names, arms)) + " samples/s"
        pairs = comparisons(settings, bool(config.get("compare", {}).get("settings")))  # the run's own
        table = Race([a.get("round_samples_per_s") or [] for a in arms])  # the noise of every arm of the run
        for i, j in pairs:
            if arms[i].get("round_samples_per_s") and arms[j].get("round_samples_per_s"):
                c = table.compare(i, j)
                width = half_width(c)
                shown += f"; {names[i]} vs {names[j]} {c['ratio']:+.1%}" + (f" (±{width:.1%})" if width is not None else "")
        stop = r["compare_stop"]
        shown += f"; {stop['rounds']} rounds, " + {"target_ci": "on target", "budget_min": "budget spent",
                                                    "cap": "all rounds"}[stop["stop"]]
        return with_progress(f"{setup}: {shown}", progress)


MODE = Compare()
