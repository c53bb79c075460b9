"""mode=profile (conf/mode/profile.yaml): where a training step's time goes. torch.profiler over
steady-state steps (bsbench.training.profiling), one trace per profile in the job's folder; the
report's "What differs" section (bsbench.report.differences) compares neighbouring batch sizes' runs."""

from omegaconf import OmegaConf

from bsbench.core.errors import UserError
from bsbench.modes.base import Mode


class Profile(Mode):
    name = "profile"
    measures = "profiled training"
    one_device = "profiles training steps"
    sections = ("profile",)

    def check(self, cfg, here):
        spec = cfg.profile
        # unresolved: before the job runs, Hydra's ${hydra:runtime.output_dir} has no value yet
        if OmegaConf.to_container(cfg.trainer, resolve=False).get("default_root_dir") is None:
            raise UserError("mode=profile writes its traces under trainer.default_root_dir, which is null; use its "
                            "default (the run's own directory) or a directory, e.g. trainer.default_root_dir=runs.")
        needed = cfg.timing.warmup_steps + (spec.warmup + spec.active) * spec.repeat
        max_steps = cfg.trainer.max_steps
        if max_steps != -1 and max_steps < needed:
            raise UserError(f"trainer.max_steps={max_steps} ends training before the last profile (timing.warmup_steps "
                            f"+ (profile.warmup + profile.active) * profile.repeat = {needed} steps); use "
                            f"trainer.max_steps={needed}, or leave it to mode=profile.")

    def figures(self, r):
        if not r.get("profile_top"):
            return super().figures(r)
        top = ", ".join(f"{op['name'][:60]} {op['share']:.0%}" for op in r["profile_top"][:3])
        count = r["profile_count"]
        return f"{count} profile{'s' if count > 1 else ''}; most of the step: {top}"


MODE = Profile()
