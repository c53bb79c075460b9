"""bsbench's hooks into Hydra's own life cycle (hydra.callbacks in conf/config.yaml): check the config
before Hydra creates any directory, and summarize a sweep when it ends. Hydra instantiates these at
the start of every run, so the checks and the report are imported only when called."""

import signal
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bsbench.core import process
from bsbench.core.errors import UserError, fail
from bsbench.core.fields import ANSWERED


def check(config: DictConfig, sweep: bool) -> DictConfig:
    """The config typed and checked, or a UserError naming the first setting that cannot work. A sweep's
    own settings are checked here, its jobs each by bsbench's sweeper once their values are known."""
    from bsbench.core.config import typed

    cfg = typed(config)  # before importing the checks, which import torch: a wrong type costs no second
    from bsbench.job.validate import check_output_root, validate, validate_sweep

    (validate_sweep if sweep else validate)(cfg)
    check_output_root(cfg.output_root)
    if cfg.resume and not sweep:
        from bsbench.modes import mode_of

        if not mode_of(cfg.mode).resumes_single_run:
            from bsbench.job.sweep import recorded_mode

            if not Path(cfg.resume).is_dir():
                raise UserError(f"resume={cfg.resume} is not a folder; use the folder a sweep printed, with its command "
                                "and -m (e.g. resume=outputs/multirun/<date>/<time>), or a tune's with mode=tune.")

            held = recorded_mode(cfg.resume)
            if held is not None and mode_of(held).resumes_single_run:  # a tune's folder, resumed in another mode
                raise UserError(f"resume={cfg.resume} holds a mode={held} run; resume it with its own command, "
                                f"mode={held} and the overrides in {Path(cfg.resume) / '.hydra' / 'overrides.yaml'}.")
            raise UserError(f"resume={cfg.resume} finishes a sweep; run the sweep's own command, with -m.")
        from bsbench.job.identity import job_id
        from bsbench.job.sweep import check_resumable_run

        check_resumable_run(cfg.resume, cfg.mode)
        mode_of(cfg.mode).check_resume(cfg, cfg.resume, job_id(cfg))
    elif cfg.resume:
        from bsbench.job.sweep import check_resumable

        check_resumable(cfg.resume)
    return cfg


def preflight(config: DictConfig, sweep: bool) -> None:
    """check(), with a mistake ending the process in one line (exit 2), and a stop in one line (130)."""
    try:
        check(config, sweep)
    except UserError as err:
        fail(err)
    except KeyboardInterrupt:
        stopped_outside_a_job(None)


class Preflight(Callback):
    """Stops a bad command line before Hydra creates directories."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        preflight(config, sweep=False)
        from bsbench.job.sweep import claim_run

        try:
            claim_run(config)  # Hydra makes the run's directory after this: the one claimed
        except UserError as err:
            fail(err)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        preflight(config, sweep=True)


class SweepReport(Callback):
    """When a multirun ends: write its report (tables, verdict, plots) into the sweep directory, print
    it, and exit non-zero if any run failed (out-of-memory runs are results, not failures)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        from bsbench.report.write import ReportNotWritten, write_report

        try:
            text, results = write_report([Path(config.hydra.sweep.dir)])
        except ReportNotWritten as err:  # a full disk: the text still reaches the terminal, and why not the files
            print("\n" + err.text, flush=True)
            print(err.line(Path(config.hydra.sweep.dir)), file=sys.stderr, flush=True)
            sys.exit(1)
        except KeyboardInterrupt:
            _ignore_stops()
            print(f"\nbsbench: interrupted while the report was written; every result is kept in "
                  f"{config.hydra.sweep.dir}; `bsbench-report {config.hydra.sweep.dir}` writes the report again.",
                  file=sys.stderr, flush=True)
            sys.exit(130)
        print("\n" + text, flush=True)
        failed = [r for r in results if r.get("status") not in ANSWERED]
        if failed:
            print(f"bsbench: {len(failed)} of {len(results)} runs did not finish; see the table above; "
                  f"resume={config.hydra.sweep.dir} runs them again.", file=sys.stderr, flush=True)
            sys.exit(1)


def _ignore_stops() -> None:
    """A second Ctrl-C (people press it twice) or SIGTERM while bsbench stops changes nothing."""
    for name in ("SIGINT", "SIGTERM"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)


def stopped_outside_a_job(sweep_dir: str | None, fresh: bool = False) -> None:
    """Ctrl-C or SIGTERM while no job runs (the sweep being planned, or between two jobs): the report
    of what finished is written and printed, the line says where it is and how to resume, exit 130;
    never a traceback. `fresh`: the sweep directory may be this command's own (not resume=): where this
    process made and claimed it (bsbench.job.sweep.CREATED) and it holds no result, it goes, so that no
    folder stays that holds nothing; a directory it did not make, or another sweep's, is never touched."""
    _ignore_stops()
    directory = Path(sweep_dir) if sweep_dir else None
    if directory is not None and directory.is_dir():
        _remove_unstarted_jobs(directory)
    if directory is None or not directory.is_dir() or not any(directory.rglob("results.json")):
        from bsbench.job.sweep import CREATED

        if fresh and directory is not None and directory.is_dir() and directory.resolve() in CREATED:
            import shutil

            shutil.rmtree(directory, ignore_errors=True)
        print("\nbsbench: interrupted before any job finished; nothing to keep.", file=sys.stderr, flush=True)
        sys.exit(130)
    from bsbench.report.write import ReportNotWritten, write_report

    try:
        print("\n" + write_report([directory])[0], flush=True)
    except ReportNotWritten as err:
        print("\n" + err.text, flush=True)
        print(err.line(directory), file=sys.stderr, flush=True)
    print(f"\nbsbench: interrupted between jobs; finished results are kept in {directory}; resume with "
          f"resume={directory}", file=sys.stderr, flush=True)
    sys.exit(130)


def _remove_unstarted_jobs(directory: Path) -> None:
    """The folders Hydra made in this process for a job that the stop came before (no result in it yet):
    no job folder stays without its results.json. Not on SLURM, where a job's folder may be its running
    job's, which records its own stop."""
    import shutil

    if (directory / ".submitit").exists():
        return
    for folder in directory.iterdir():
        if folder.is_dir() and not folder.name.startswith(".") and folder.stat().st_mtime >= process.STARTED_AT \
                and not any(folder.rglob("results.json")):
            shutil.rmtree(folder, ignore_errors=True)
