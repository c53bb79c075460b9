"""`bsbench-report DIR [DIR ...]` (also `python -m bsbench.report`), run by itself at the end of every
multirun: reads every results.json under the directories and writes runs.csv, summary.csv,
summary.md, verdict.md and the PNG plots. `bsbench-report --suggest` lists candidate batch sizes."""

import argparse
import sys
from pathlib import Path

from bsbench.plots import write_plots
from bsbench.result import read_results
from bsbench.summary import LEADING, configurations, summary_markdown, write_csv
from bsbench.verdict import verdict_markdown

SUMMARY_LEADING = ["setting", "batch_size", "runs", "model", "data", "image_size", "precision_used", "world_size",
                   "epochs", "device_name"]
# Streaming multiprocessors of common GPUs, for --suggest without the GPU at hand.
KNOWN_SM = {"V100": 80, "RTX 2080 Ti": 68, "A100": 108, "RTX 3090": 82, "RTX 4090": 128, "L4": 58, "H100 SXM": 132}


def write_report(directories: list[Path], out: Path | None = None) -> tuple[str, list[dict]]:
    """Write the report of every run under `directories` into `out` (default: the first directory);
    return the text to print and the results it covers."""
    directories = [Path(d) for d in directories]
    out = Path(out) if out else directories[0]
    out.mkdir(parents=True, exist_ok=True)
    results = sorted((r for d in directories for r in read_results(d)),
                     key=lambda r: (str(r.get("model")), r.get("batch_size") or 0, r.get("repeat") or 0, r["run_dir"]))
    rows = configurations(results)
    write_csv(results, out / "runs.csv", LEADING)
    write_csv(rows, out / "summary.csv", SUMMARY_LEADING)
    summary = summary_markdown(directories, results, rows)
    verdict = verdict_markdown(rows)
    (out / "summary.md").write_text(summary)
    (out / "verdict.md").write_text(verdict)
    plots = write_plots(rows, out)
    files = ["runs.csv", "summary.csv", "summary.md", "verdict.md", *(p.name for p in plots)]
    return f"{summary}\n{verdict}\nbsbench: wrote {', '.join(files)} in {out}\n", results


def rule_of_thumb(sm_count: int, image_size: int, channels: int, largest: int) -> list[int]:
    """int(n * 2**14 * SM / (H * W * C)) for n = 1, 2, ... up to `largest` (quoted beside the reference)."""
    unit = 2**14 * sm_count / (image_size * image_size * channels)
    return [int(n * unit) for n in range(1, int(largest / unit) + 1) if int(n * unit) > 0]


def suggest(sm_count: int | None, image_size: int, channels: int, largest: int, around: int) -> str:
    if sm_count is None:
        import torch

        if not torch.cuda.is_available():
            known = ", ".join(f"{name} {sm}" for name, sm in KNOWN_SM.items())
            raise SystemExit(f"bsbench-report: error: no CUDA GPU here to count its SMs; pass --sm N ({known}).")
        props = torch.cuda.get_device_properties(0)
        sm_count, device = props.multi_processor_count, props.name
    else:
        device = "the given GPU"
    powers = [2**k for k in range(largest.bit_length()) if 2**k <= largest]
    thumb = rule_of_thumb(sm_count, image_size, channels, largest)
    near = sorted({b for b in [*powers, *thumb, *range(8, largest + 1, 8)] if abs(b - around) <= 32})
    return "\n".join([
        f"Candidate batch sizes for {device} ({sm_count} SMs), {channels}x{image_size}x{image_size} images, up to {largest}:",
        f"  powers of two:   {', '.join(map(str, powers))}",
        f"  multiples of 8:  8, 16, 24, ..., {largest - largest % 8}",
        f"  rule of thumb:   {', '.join(map(str, thumb)) or 'none'}  (int(n * 2**14 * SM / (H*W*C)))",
        f"  near {around}:        {', '.join(map(str, near))}",
        "",
        "Measure instead of guessing, with neighbours and repeats:",
        f"  python -m bsbench -m 'batch_size=range({max(1, around - 8)},{around + 9})' repeats=3 data.image_size={image_size}",
    ]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bsbench-report", description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="*", type=Path, help="sweep or run directories holding results.json files")
    parser.add_argument("--out", type=Path, help="where to write the report (default: the first directory)")
    parser.add_argument("--suggest", action="store_true", help="list candidate batch sizes for this GPU instead")
    parser.add_argument("--sm", type=int, help="--suggest: number of streaming multiprocessors (default: this GPU's)")
    parser.add_argument("--image-size", type=int, default=224, help="--suggest: image height and width (224)")
    parser.add_argument("--channels", type=int, default=3, help="--suggest: image channels (3)")
    parser.add_argument("--max", type=int, default=1024, help="--suggest: largest batch size to list (1024)")
    parser.add_argument("--around", type=int, default=512, help="--suggest: batch size to list neighbours of (512)")
    args = parser.parse_args(argv)
    if args.suggest:
        print(suggest(args.sm, args.image_size, args.channels, args.max, args.around), end="")
        return 0
    if not args.directories:
        parser.error("give one or more directories with results.json files under them, or --suggest")
    missing = [str(d) for d in args.directories if not d.is_dir()]
    if missing:
        parser.error(f"not a directory: {', '.join(missing)}")
    text, results = write_report(args.directories, args.out)
    if not results:
        parser.error(f"no results.json under {', '.join(map(str, args.directories))}")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
