"""What a mode is: one object per `mode=<name>` (bsbench/modes/<name>.py, beside conf/mode/<name>.yaml)
holding everything that mode does differently: its checks, the configs a job of it runs, the results
it writes, its line on the terminal and what the report calls its rate. Every other module asks the
mode instead of testing `cfg.mode`; its run on the device is bsbench/job/runs/<name>.py.

A mode imports bsbench.core alone, never torch (the report, the sweeper and Hydra's plugins read the
registry): pyproject.toml's import contracts hold it to that."""


from bsbench.core.fields import Status
from bsbench.core.numbers import number, quantity

Progress = tuple[str, str] | None  # where a sweep is ("job 3 of 8", "2 min left"), for the job line


class Mode:
    name = ""
    measures = "training"     # what its samples/s is the rate of (the report's words)
    one_device = None         # where it runs on one device only: what it does there ("searches")
    sections: tuple[str, ...] = ()  # config sections that only this mode reads (part of its jobs only)
    own_rounds = False        # it runs rounds itself: target_ci and budget_min bound them, not a sweep's repeats
    reports_single_run = False  # a single run of it is a sweep's worth: it prints its report
    resumes_single_run = False  # resume=<a single run's folder> goes on with it (a sweep's resume is any mode's)

    def check(self, cfg, here: bool) -> None:
        """The checks this mode adds to every run's (bsbench.job.validate), before anything runs."""

    def arms(self, cfg) -> list[tuple[str, object]]:
        """The configs a job of this mode runs besides its own, each with its name (mode=compare's settings):
        bsbench.job.validate checks each as it checks a run."""
        return []

    def energy(self, cfg) -> tuple[str, str] | None:
        """Where a job measures energy as its objective: what it measures it for and a setting that needs none
        (bsbench.job.validate refuses it where the machine cannot measure energy)."""
        return None

    def check_steps(self, cfg, steps: int | None) -> None:
        """The checks of the `steps` a run makes (None where a datamodule of the user's decides), after its
        batch size, data and devices are known to work."""

    def check_resume(self, cfg, path, job: str) -> None:
        """resume=<a single run's folder> (where `resumes_single_run`): what must match the folder, whose
        job is to be `job` (its id, bsbench.job.identity)."""

    def full_batches(self, cfg) -> list[tuple[int, str]]:
        """The batch sizes that must each have a full training batch, with how the user wrote them."""
        return [(cfg.batch_size, f"batch_size={cfg.batch_size}")]

    def unused(self, cfg) -> tuple[str, ...]:
        """Config keys the mode's jobs do not run with: not part of what a job is."""
        return ()

    def folder(self, cfg) -> str:
        """The start of a job's folder name in its sweep (the job id follows)."""
        return f"bs{cfg.batch_size}"

    def results(self, result: dict) -> list[dict]:
        """The results.json files a job's result becomes: itself, or one per measured arm."""
        return [result]

    def line(self, r: dict, progress: Progress) -> str:
        """A job's line on the terminal: where the sweep is, what the job was, its headline figures."""
        figures = self.figures(r) if r["status"] == Status.OK else failure(r)
        return with_progress(f"{setup(r)}: {figures}", progress)

    def result_line(self, r: dict, progress: Progress) -> str:
        """The line of one of the results a job wrote (one arm of a compare job)."""
        return self.line(r, progress)

    def figures(self, r: dict) -> str:
        shown = [f"{number(r[key]) if fmt is None else format(r[key], fmt)}{unit}" for key, fmt, unit in self.FIGURES
                 if r.get(key) is not None]
        if r.get(self.MFU) is not None:
            shown.append(f"MFU {quantity(100 * r[self.MFU], '%')}")
        if r.get("input_bound"):
            shown.append(f"input-bound: {quantity(100 * r['data_wait_fraction'], '%')} of the steps' time waiting for data")
        return ", ".join(shown) or "no figures"

    # the headline figures of a job's line: (field, format, unit), and the MFU shown beside them; format
    # None: three significant digits (bsbench.core.numbers), as the report gives them
    FIGURES = (("train_samples_per_s", None, " samples/s"), ("train_time_s", None, " s train"),
               ("inference_time_s", None, " s inference"), ("test_acc", ".3f", " test acc"))
    MFU = "mfu"


def failure(r: dict) -> str:
    return str(r["status"]) + (f" ({r['error_type']}: {r['error']})" if "error" in r else "")


def model_chosen(r: dict) -> str:
    """The architecture, on the line of a job whose command chose it (a sweep over architectures)."""
    keys = ("model", "model.arch", "model._target_")
    chosen = any(o.split("=", 1)[0].lstrip("+~") in keys for o in r.get("overrides") or [])
    return f" model={r['model']}" if chosen else ""


def setup(r: dict, what: str | None = None) -> str:
    """What a job was: its batch size (or `what`), the model where chosen, the precision, the ranks, the repeat."""
    text = (what or f"batch_size={r['batch_size']}") + model_chosen(r)
    text += f" precision={r.get('precision_used') or r['precision']}"
    if (r.get("world_size") or 1) > 1:
        text += f" world_size={r['world_size']}"
    if r.get("repeat"):
        text += f" repeat={r['repeat']}"
    return text


def with_progress(line: str, progress: Progress) -> str:
    return f"{progress[0]}: {line} ({progress[1]})" if progress else line
