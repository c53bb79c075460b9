"""The report's files, derived from results.json files and nothing else: runs.csv, summary.csv,
summary.md, verdict.md and the PNG plots. Run by itself at the end of every multirun."""

from pathlib import Path

from bsbench.core.results import read_results
from bsbench.report.plots import write_plots
from bsbench.report.summary import SUMMARY_LEADING, configurations, summary_markdown, write_csv
from bsbench.report.verdict import verdict_markdown


def write_report(directories: list[Path], out: Path | None = None) -> tuple[str, list[dict]]:
    """Write the report of every run under `directories` into `out` (default: the first directory);
    return the text to print and the results it covers."""
    directories = [Path(d) for d in directories]
    out = Path(out) if out else directories[0]
    out.mkdir(parents=True, exist_ok=True)
    unreadable: list[tuple[str, str]] = []  # named under the table, not lost in silence
    results = sorted((r for d in directories for r in read_results(d, unreadable)),
                     key=lambda r: (str(r.get("model")), r.get("batch_size") or 0, r.get("repeat") or 0, r["run_dir"]))
    rows = configurations(results)
    write_csv(results, out / "runs.csv")
    write_csv(rows, out / "summary.csv", SUMMARY_LEADING)
    summary = summary_markdown(directories, results, rows, unreadable)
    verdict = verdict_markdown(rows)
    (out / "summary.md").write_text(summary)
    (out / "verdict.md").write_text(verdict)
    plots = write_plots(rows, out)
    files = ["runs.csv", "summary.csv", "summary.md", "verdict.md", *(p.name for p in plots)]
    return f"{summary}\n{verdict}\nbsbench: wrote {', '.join(files)} in {out}\n", results
