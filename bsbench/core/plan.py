"""A sweep's plan on disk: `plan.json` in its directory names every job the sweep's commands asked for
(its folder, identity and overrides), written when the sweep is planned, before any job runs, and
kept across resumes (a resumed command's jobs are added to it). The report reads it to name the jobs
that have no results.json: a job whose folder exists without one (the file was deleted, or the job was
killed before it wrote it) and a job that never started (the sweep was stopped before it). Stdlib only."""

import json
from pathlib import Path

from bsbench.core.results import RESULT_FILE, write_json_atomic

PLAN_FILE = "plan.json"


def read_plan(directory: Path) -> list[dict]:
    """The planned jobs of the sweep in `directory`: [{"folder", "job_id", "overrides"}], none where it
    has no plan (an earlier bsbench's sweep, a single run) or one that cannot be read."""
    try:
        jobs = json.loads((Path(directory) / PLAN_FILE).read_text()).get("jobs")
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(jobs, list):
        return []
    return [j for j in jobs if isinstance(j, dict) and isinstance(j.get("folder"), str) and j["folder"]
            and "/" not in j["folder"] and j["folder"] not in (".", "..")]


def write_plan(directory: Path, jobs: list[dict]) -> None:
    """Add `jobs` to the sweep's plan (a job already in it, by folder, stays as it was first planned)."""
    known = read_plan(directory)
    folders = {j["folder"] for j in known}
    write_json_atomic(Path(directory) / PLAN_FILE, {"jobs": known + [j for j in jobs if j["folder"] not in folders]})


def without_results(directory: Path) -> tuple[list[dict], list[dict]]:
    """The planned jobs of the sweep in `directory` that have no results.json: (those whose folder exists,
    those never started), each with the directory they belong to."""
    jobs = read_plan(directory)
    overrides = [[str(o) for o in j.get("overrides") or []] if isinstance(j.get("overrides"), list) else []
                 for j in jobs]
    common = set.intersection(*map(set, overrides)) if len(jobs) > 1 else set()
    gone, not_run = [], []
    for job, own in zip(jobs, overrides):
        folder = Path(directory) / job["folder"]
        # `varies`: what sets the job apart in its sweep (batch_size=31 repeat=2), not the command's every word
        entry = {**job, "directory": str(directory), "varies": [o for o in own if o not in common]}
        if not folder.is_dir():
            not_run.append(entry)
        elif next(folder.rglob(RESULT_FILE), None) is None:
            gone.append(entry)
    return gone, not_run


def sweeps_under(directories: list[Path]) -> list[Path]:
    """Every sweep directory with a plan under `directories` (a folder of several sweeps holds several)."""
    return sorted({p.parent for d in directories for p in Path(d).rglob(PLAN_FILE)})
