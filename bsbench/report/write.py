"""The report's files, derived from results.json files and nothing else: runs.csv, summary.csv,
summary.md, verdict.md (with mode=profile's "What differs" section), the PNG plots and report.html (all of
it on one self-contained page). Run by itself
at the end of every multirun."""

from pathlib import Path

from bsbench.core.plan import sweeps_under, without_results
from bsbench.core.results import read_results, write_atomic
from bsbench.core.stopping import read_stop, usable
from bsbench.core.arms import arm_names
from bsbench.report.differences import differences_markdown
from bsbench.report.html import differences_html, report_html
from bsbench.report.plots import write_plots
from bsbench.report.summary import (SUMMARY_LEADING, configurations, group_key, label_groups, shared_settings,
                                    summary_markdown, write_csv)
from bsbench.report.tune import write_tune
from bsbench.report.verdict import verdict_markdown


def stops(directories: list[Path], results: list[dict]) -> list[dict]:
    """What ended each measurement that adaptive stopping ran: a sweep's stop.json, and the stop that
    each compare run recorded in its results (once per run, not once per batch size)."""
    found = [{**stop, "label": f"{d.name}: " if len(directories) > 1 else ""}
             for d in directories if (stop := read_stop(d))]
    seen, labels = set(), label_groups(results)
    for r in results:
        stop, cid = r.get("compare_stop"), r.get("compare_id")
        if usable(stop) and isinstance(cid, str) and cid not in seen:
            seen.add(cid)
            if r.get("tune_stage"):
                found.append({**stop, "compare_id": cid, "label": f"tune, its {r['tune_stage']} race: "})
                continue
            settings = r.get("compare_settings")
            if isinstance(settings, list) and all(isinstance(s, dict) for s in settings) and settings and \
                    (r.get("config") or {}).get("compare", {}).get("settings"):
                found.append({**stop, "compare_id": cid, "label": f"compare {', '.join(arm_names(settings))}: "})
                continue
            sizes = ", ".join(str(b) for b in r.get("compare_batch_sizes") or [])
            setting = labels[group_key(r)]
            found.append({**stop, "compare_id": cid, "label": f"compare {sizes}{f' ({setting})' if setting else ''}: "})
    return found


class ReportNotWritten(Exception):
    """A file of the report could not be written (a full or read-only disk): the report's text, which
    is still printed, and the error, which names the file."""

    def __init__(self, text: str, error: OSError):
        super().__init__(f"could not write {error.filename}: {error.strerror}")
        self.text, self.error = text, error

    def line(self, directory: Path) -> str:
        """One sentence for the terminal: the file, why, and how to write the report again."""
        return (f"bsbench: could not write {self.error.filename} ({self.error.strerror}); every results.json is "
                f"kept in {directory}; free space there and run `bsbench-report {directory}`, or write the report "
                f"elsewhere with `bsbench-report {directory} --out DIR`.")


def write_report(directories: list[Path], out: Path | None = None) -> tuple[str, list[dict]]:
    """Write the report of every run under `directories` into `out` (default: the first directory);
    return the text to print and the results it covers. Where a file cannot be written, the files
    before it stay, none is left half-written (each is written whole or not at all), and
    ReportNotWritten carries the text."""
    directories = [Path(d) for d in directories]
    out = Path(out) if out else directories[0]
    unreadable: list[tuple[str, str]] = []  # named under the table, not lost in silence
    results = sorted((r for d in directories for r in read_results(d, unreadable)),
                     key=lambda r: (str(r.get("model")), r.get("batch_size") or 0, r.get("repeat") or 0, r["run_dir"]))
    rows = configurations(results)
    absent: tuple[list[dict], list[dict]] = ([], [])  # the jobs a sweep planned that have no results.json
    for sweep in sweeps_under(directories):
        gone, not_run = without_results(sweep)
        absent[0].extend(gone)
        absent[1].extend(not_run)
    summary = summary_markdown(directories, results, rows, unreadable, absent)
    verdict = verdict_markdown(rows, stops(directories, results), results)
    explained = differences_markdown(results)  # mode=profile's: why, where profiles exist
    if explained:
        verdict += "\n" + explained
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_csv(results, out / "runs.csv")
        write_csv(rows, out / "summary.csv", SUMMARY_LEADING)
        write_atomic(out / "summary.md", summary)
        write_atomic(out / "verdict.md", verdict)
        plots = write_plots(rows, out)
        tuned, tune_files = write_tune(results, out)  # mode=tune's: what trains fastest, what matters
        images = [*plots, *(p for p in tune_files if p.suffix == ".png")]
        page = report_html(f"bsbench report: {', '.join(d.name for d in directories)}", [summary, verdict, tuned],
                           images, differences_html(label_groups(results), shared_settings(results)))
        write_atomic(out / "report.html", page)
    except OSError as exc:
        raise ReportNotWritten(f"{summary}\n{verdict}", exc) from None
    files = ["runs.csv", "summary.csv", "summary.md", "verdict.md", *(p.name for p in [*plots, *tune_files]),
             "report.html"]
    tuned = f"\n{tuned}" if tuned else ""
    return f"{summary}\n{verdict}{tuned}\nbsbench: wrote {', '.join(files)} in {out}\n", results
