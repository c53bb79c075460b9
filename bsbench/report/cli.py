"""`bsbench-report DIR [DIR ...]` (also `python -m bsbench.report`): the report of every results.json
under the directories (bsbench.report.write); `bsbench-report --suggest` lists candidate batch sizes.
Nothing here imports torch: a report can be built wherever the results were copied to."""

import argparse
import sys
from pathlib import Path

from bsbench.core.results import read_results
from bsbench.report.suggest import suggest
from bsbench.report.write import ReportNotWritten, write_report


DESCRIPTION = """\
Build the report of every results.json under the given sweep or run directories,
merging them: runs.csv, summary.csv, summary.md, verdict.md and the plots, written
into the first directory (or --out) and printed. Or, with --suggest, list candidate
batch sizes for a GPU and the commands that measure them."""
EXAMPLES = """\
examples:
  bsbench-report outputs/multirun/2026-11-27/14-02-11
  bsbench-report sweep_a sweep_b --out merged       # one report of two sweeps
  bsbench-report --suggest --sm 132 --around 256    # an H100 SXM's 132 SMs"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bsbench-report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DESCRIPTION, epilog=EXAMPLES)
    parser.add_argument("directories", nargs="*", type=Path, help="sweep or run directories holding results.json files")
    parser.add_argument("--out", type=Path, help="where to write the report (default: the first directory)")
    parser.add_argument("--suggest", action="store_true", help="list candidate batch sizes for this GPU instead")
    parser.add_argument("--sm", type=int, help="--suggest: number of streaming multiprocessors (default: this GPU's)")
    parser.add_argument("--image-size", type=int, default=224, help="--suggest: image height and width (224)")
    parser.add_argument("--channels", type=int, default=3, help="--suggest: image channels (3)")
    parser.add_argument("--max", type=int, default=1024, help="--suggest: largest batch size to list (1024)")
    parser.add_argument("--around", type=int, default=512,
                        help="--suggest: the batch size to centre the list and the commands on (512)")
    args = parser.parse_args(argv)
    if args.suggest:
        print(suggest(args.sm, args.image_size, args.channels, args.max, args.around), end="")
        return 0
    if not args.directories:
        parser.error("give one or more directories with results.json files under them, or --suggest")
    missing = [str(d) for d in args.directories if not d.is_dir()]
    if missing:
        parser.error(f"not a directory: {', '.join(missing)}")
    try:
        text, results = write_report(args.directories, args.out)
    except ReportNotWritten as err:  # a full or read-only disk: the text, then the one line naming the file
        print(err.text, end="")
        print(err.line(args.directories[0]), file=sys.stderr)
        return 1
    if not results:
        unreadable: list[tuple[str, str]] = []
        for directory in args.directories:
            read_results(directory, unreadable)
        named = "; ".join(f"{path} ({why})" for path, why in unreadable[:5]) + ("; ..." if len(unreadable) > 5 else "")
        parser.error(f"no readable results.json under {', '.join(map(str, args.directories))}"
                     + (f"; not read: {named}" if unreadable else ""))
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
