"""Each mode's run, by the mode's name: `RUNS[name](cfg, started_at)` runs a job of it and returns its result
on the process that writes it (global rank 0). What a mode is (its checks, its results, its line) is
bsbench.modes'; how it runs on the device is here, one module per mode."""

from bsbench.job.runs import compare, find_max, inference, profile, throughput, train, tune

RUNS = {"train": train.run, "throughput": throughput.run, "compare": compare.run, "find_max": find_max.run,
        "inference": inference.run, "profile": profile.run, "tune": tune.run}
