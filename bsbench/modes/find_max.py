"""mode=find_max: the largest batch size that trains, found by running it.

Doubling from `batch_size` until a trial runs out of memory or reaches the limit (`find_max.max_val`
or the number of training images), then bisecting between the largest that ran and the smallest
that did not. Each trial is a fresh run of `trainer.max_steps` real training steps (conf/mode/
find_max.yaml). Written here rather than taken from Lightning's Tuner, which stops before trying
its `max_val` (reporting a size it never ran) and re-raises out-of-memory errors it does not know."""

from typing import Callable

from bsbench.core.errors import UserError
from bsbench.core.fields import Status
from bsbench.modes.base import Mode, failure, setup, with_progress

STOPS = ("memory", "max_val", "dataset", "max_trials", "budget")


def search(start: int, max_val: int, train_images: int, max_trials: int, fits: Callable[[int], bool],
           more: Callable[[int], bool] = lambda size: True, tolerance: Callable[[int], int] = lambda largest: 1) -> dict:
    """Run `fits(batch_size)` (False: out of memory) on the sizes the search needs; report the largest
    that ran, what ended the search, and every trial. The answer is always a size that ran. mode=tune's
    search: `more(size)` false before the trial of `size`, once one ran, ends it there (its time
    budget); the bisection stops once the sizes that ran and did not are `tolerance(largest that ran)`
    apart."""
    limit = min(max_val, train_images)
    at_limit = "max_val" if max_val <= train_images else "dataset"
    trials: list[dict] = []
    largest_ok, smallest_oom = 0, None
    size, stop = min(start, limit), "max_trials"
    while len(trials) < max_trials:
        if largest_ok and not more(size):
            stop = "budget"
            break
        ok = fits(size)
        trials.append({"batch_size": size, "status": str(Status.OK if ok else Status.OOM)})
        if ok:
            largest_ok = size
        else:
            smallest_oom = size
        if smallest_oom is None:
            if size >= limit:
                stop = at_limit
                break
            size = min(2 * size, limit)
        elif smallest_oom - largest_ok <= tolerance(largest_ok):
            stop = "memory"
            break
        else:
            size = (largest_ok + smallest_oom) // 2
    return {"max_batch_size": largest_ok or None, "find_max_stop": stop, "find_max_trials": trials}


def find_max(cfg, run_trial: Callable[[object], None], train_images: int, is_oom: Callable[[BaseException], bool],
             free_memory: Callable[[], None], **limits) -> dict:
    """The search over real trials: `run_trial(config)` trains the config's batch size; an exception
    that `is_oom` recognises is a trial that did not fit, any other ends the job; `limits`: search's
    `more` and `tolerance`."""

    def fits(batch_size: int) -> bool:
        trial = cfg.copy()
        trial.batch_size = batch_size
        try:
            run_trial(trial)
            return True
        except Exception as exc:
            if not is_oom(exc):
                raise
            return False
        finally:
            free_memory()  # the trial's model and tensors (garbage-collected), before the next allocates

    return search(cfg.batch_size, cfg.find_max.max_val, train_images, cfg.find_max.max_trials, fits, **limits)


class FindMax(Mode):
    name = "find_max"
    one_device = "searches"

    def check(self, cfg, here):
        if cfg.find_max.max_val < cfg.batch_size:
            raise UserError(f"find_max.max_val={cfg.find_max.max_val} is below batch_size={cfg.batch_size}, where the "
                            f"search starts; use find_max.max_val={max(8192, cfg.batch_size)}, or a batch_size at "
                            f"most {cfg.find_max.max_val}.")
        if cfg.trainer.max_steps < 1:
            raise UserError(f"trainer.max_steps={cfg.trainer.max_steps} would make every find_max trial train forever; "
                            "use the training steps per trial, e.g. trainer.max_steps=3.")

    def line(self, r, progress):
        if "find_max_stop" not in r:
            return with_progress(f"{setup(r)}: {failure(r)}", progress)
        largest = r["max_batch_size"] or "none (1 did not fit)"
        return with_progress(f"{setup(r)}: largest batch size that ran: {largest} (the search ended at: "
                             f"{r['find_max_stop']})", progress)


MODE = FindMax()
