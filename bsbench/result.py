"""A run's result: one flat JSON object per run directory, written atomically."""

import json
import os
import tempfile
from pathlib import Path

RESULT_FILE = "results.json"


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write to a temporary file beside `path`, then rename: a reader (or a killed run) never sees
    a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_results(directory: Path) -> list[dict]:
    """Every results.json under `directory`, each with the directory it came from."""
    results = []
    for path in sorted(Path(directory).rglob(RESULT_FILE)):
        with open(path) as f:
            result = json.load(f)
        result["run_dir"] = str(path.parent)
        results.append(result)
    return results
