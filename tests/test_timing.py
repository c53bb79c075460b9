import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import bsbench.training.timing
from bsbench.training.timing import StepTimer, TimingCallback

VAL_SLEEP_S = 0.3
STEP_S = 0.002


class Clock:
    """bsbench's clock in these tests: it moves only where a test says (a step, a slow validation) and
    by a microsecond per read, so what is counted where does not depend on the machine's load."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1e-6
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


CLOCK = Clock()


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        x, y = batch
        CLOCK.advance(STEP_S)
        return torch.nn.functional.cross_entropy(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        if batch_idx == 0:
            CLOCK.advance(VAL_SLEEP_S)  # slow validation must not count as training throughput

    def test_step(self, batch, batch_idx):
        self.layer(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader(n, batch_size):
    return DataLoader(TensorDataset(torch.randn(n, 4), torch.randint(0, 2, (n,))), batch_size=batch_size)


def fit(timing: TimingCallback, step_timer: StepTimer, train_batches: int = 10) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=2, callbacks=[timing, step_timer], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(Tiny(), loader(train_batches * 4, 4), loader(8, 4))
    return trainer


@pytest.fixture(scope="module")
def timed():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bsbench.training.timing.time, "perf_counter", CLOCK)
        timing, step_timer = TimingCallback(warmup_steps=3), StepTimer(warmup_steps=3)
        trainer = fit(timing, step_timer)
        trainer.test(trainer.lightning_module, loader(24, 8), verbose=False)
    return {**timing.metrics(), "step_times_s": step_timer.step_times_s}


def test_warmup_steps_are_left_out_of_the_steady_state_rate(timed):
    assert timed["timed_steps"] == 2 * 10 - 3


def test_samples_per_second_excludes_validation_but_train_time_includes_it(timed):
    assert timed["train_time_s"] > 2 * VAL_SLEEP_S
    timed_seconds = 17 * 4 / timed["train_samples_per_s"]
    assert 17 * STEP_S <= timed_seconds < 17 * STEP_S + 0.001  # the 17 steps after the warm-up, and only them


def test_epoch_times_cover_each_epoch_with_its_validation(timed):
    assert len(timed["epoch_times_s"]) == 2
    assert all(t > VAL_SLEEP_S for t in timed["epoch_times_s"])
    assert sum(timed["epoch_times_s"]) <= timed["train_time_s"]


def test_inference_is_timed_over_the_whole_test_set(timed):
    assert timed["test_samples"] == 24
    assert timed["inference_time_s"] > 0
    assert timed["inference_samples_per_s"] == pytest.approx(24 / timed["inference_time_s"])


def test_cpu_reports_no_peak_device_memory(timed):
    assert timed["peak_memory_mib"] is None


def test_per_step_times_hold_training_steps_only(timed):
    # 17 steps after the warm-up, in two stretches (one per epoch); the slow validation between is in none
    assert len(timed["step_times_s"]) == 17
    assert all(STEP_S <= t < STEP_S + 0.0001 for t in timed["step_times_s"])


def test_the_first_step_is_timed_apart(timed):
    assert 0 < timed["first_step_time_s"] < timed["train_time_s"]


def test_clock_reads_wait_for_the_device_per_interval_not_per_step(monkeypatch):
    syncs = []
    monkeypatch.setattr(bsbench.training.timing, "synchronize", lambda device: syncs.append(device))
    counts = []
    for batches in (6, 20):
        syncs.clear()
        fit(TimingCallback(warmup_steps=3), StepTimer(warmup_steps=3), train_batches=batches)
        counts.append(len(syncs))
    assert counts[0] == counts[1]  # more steps, no more syncs
