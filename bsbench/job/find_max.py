"""mode=find_max: the largest batch size that trains, found by running it.

Doubling from `batch_size` until a trial runs out of memory or reaches the limit (`find_max.max_val`
or the number of training images), then bisecting between the largest that ran and the smallest
that did not. Each trial is a fresh run of `trainer.max_steps` real training steps (conf/mode/
find_max.yaml). Written here rather than taken from Lightning's Tuner, which stops before trying
its `max_val` (reporting a size it never ran) and re-raises out-of-memory errors it does not know."""

from typing import Callable

from bsbench.core.fields import Status

STOPS = ("memory", "max_val", "dataset", "max_trials")


def search(start: int, max_val: int, train_images: int, max_trials: int, fits: Callable[[int], bool]) -> dict:
    """Run `fits(batch_size)` (False: out of memory) on the sizes the search needs; report the largest
    that ran, what ended the search, and every trial. The answer is always a size that ran."""
    limit = min(max_val, train_images)
    at_limit = "max_val" if max_val <= train_images else "dataset"
    trials: list[dict] = []
    largest_ok, smallest_oom = 0, None
    size, stop = min(start, limit), "max_trials"
    while len(trials) < max_trials:
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
        elif smallest_oom - largest_ok <= 1:
            stop = "memory"
            break
        else:
            size = (largest_ok + smallest_oom) // 2
    return {"max_batch_size": largest_ok or None, "find_max_stop": stop, "find_max_trials": trials}


def find_max(cfg, run_trial: Callable[[object], None], train_images: int, is_oom: Callable[[BaseException], bool],
             free_memory: Callable[[], None]) -> dict:
    """The search over real trials: `run_trial(config)` trains the config's batch size; an exception
    that `is_oom` recognises is a trial that did not fit, any other ends the job."""

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

    return search(cfg.batch_size, cfg.find_max.max_val, train_images, cfg.find_max.max_trials, fits)
