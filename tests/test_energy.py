"""Energy per image: NVML's energy counter read where the timed intervals open and close, summed over
them, null with a reason where there is no counter."""

import bsbench.training.timing
from bsbench.job.run import attempt
from bsbench.training.energy import energy_fields, unavailable
from conftest import job_config

FAST = ("mode=throughput", "batch_size=8", "timing.warmup_steps=2", "trainer.max_steps=5")


class CountingMeter:
    """A GPU's energy counter as NVML gives it (millijoules since the driver loaded): 250 mJ more per read."""

    reads = 0

    def __init__(self, device):
        self.reason = None
        self.total = 1_000_000.0

    def read(self):
        CountingMeter.reads += 1
        self.total += 250.0
        return self.total


def test_energy_is_the_counter_over_the_timed_steps_per_image(tmp_path, monkeypatch):
    monkeypatch.setattr(bsbench.training.timing, "EnergyMeter", CountingMeter)
    r = attempt(job_config(tmp_path, *FAST))
    # one timed interval (after the 2 warm-up steps, to the end of training): two reads, 250 mJ apart
    assert CountingMeter.reads == 2
    assert r["energy_j"] == 0.25 and r["energy_reason"] is None
    assert r["joules_per_sample"] == 0.25 / (3 * 8)


def test_without_a_gpu_the_energy_fields_are_null_and_say_why(tmp_path):
    r = attempt(job_config(tmp_path, *FAST))
    assert r["energy_j"] is None and r["joules_per_sample"] is None
    assert "NVIDIA" in r["energy_reason"] and "NVIDIA" in unavailable("cpu")
    assert energy_fields(500.0, 0, None)["energy_reason"] == "no timed sample"


def test_a_compare_arm_records_its_joules_per_image_in_each_round(tmp_path, monkeypatch):
    from bsbench.modes import results_of

    monkeypatch.setattr(bsbench.training.timing, "EnergyMeter", CountingMeter)
    cfg = job_config(tmp_path, "mode=compare", "compare.settings=[{batch_size:4},{batch_size:8}]", "compare.rounds=2",
                     "compare.steps=2", "compare.warmup_steps=1", "timing.warmup_steps=1", "target_ci=null")
    arms = results_of({**attempt(cfg), "run_dir": str(tmp_path)})
    for arm in arms:  # each round: one timed interval of 2 steps, 250 mJ
        assert arm["round_joules_per_sample"] == [0.25 / (2 * arm["batch_size"])] * 2
        assert arm["energy_j"] == 0.5 and arm["joules_per_sample"] == 0.5 / (4 * arm["batch_size"])
