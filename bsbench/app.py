"""The Hydra entry point: `python -m bsbench [overrides]` and the `bsbench` console script."""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bsbench.errors import UserError
from bsbench.result import RESULT_FILE, write_json_atomic
from bsbench.run import run
from bsbench.validate import validate

log = logging.getLogger("bsbench")


def config_dir() -> str:
    """conf/ inside the installed package (a wheel carries it there), else the repository's conf/
    beside the package (an editable install, or running from the project root)."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return str(packaged if packaged.is_dir() else here.parent / "conf")


@hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        validate(cfg)


        result = run(cfg)
    except UserError as err:
        print(f"bsbench: error: {err}", file=sys.stderr)
        sys.exit(2)
    if result is None:  # not global rank 0
        return
    result["run_dir"] = str(run_dir)
    result["overrides"] = list(HydraConfig.get().overrides.task)
    write_json_atomic(run_dir / RESULT_FILE, result)
    log.info(
        "batch_size=%s precision=%s: train %.1f s, inference %.1f s, %s samples/s, test acc %s -> %s",
        result["batch_size"],
        result["precision_used"],
        result["train_time_s"],
        result["inference_time_s"],
        f"{result['train_samples_per_s']:.0f}" if result["train_samples_per_s"] else "n/a",
        f"{result['test_acc']:.3f}" if result["test_acc"] is not None else "n/a",
        run_dir / RESULT_FILE,
    )


if __name__ == "__main__":
    main()
