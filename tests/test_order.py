from bsbench.core.order import sweep_order

JOBS = [["batch_size=30"], ["batch_size=31"], ["batch_size=32"]]


def test_interleaved_runs_every_configuration_once_per_round():
    order = sweep_order(JOBS, repeats=2, order="interleaved", seed=0)
    assert order == [["batch_size=30", "repeat=0"], ["batch_size=31", "repeat=0"], ["batch_size=32", "repeat=0"],
                     ["batch_size=30", "repeat=1"], ["batch_size=31", "repeat=1"], ["batch_size=32", "repeat=1"]]


def test_grid_keeps_hydras_order_with_repeats_back_to_back():
    order = sweep_order(JOBS, repeats=2, order="grid", seed=0)
    assert [o[0] for o in order] == ["batch_size=30", "batch_size=30", "batch_size=31", "batch_size=31",
                                     "batch_size=32", "batch_size=32"]


def test_shuffled_rounds_are_seeded_and_each_holds_every_configuration():
    jobs = [[f"batch_size={b}"] for b in range(500, 516)]
    order = sweep_order(jobs, repeats=3, order="shuffled", seed=7)
    assert order == sweep_order(jobs, repeats=3, order="shuffled", seed=7)
    assert order != sweep_order(jobs, repeats=3, order="shuffled", seed=8)
    rounds = [order[i * 16:(i + 1) * 16] for i in range(3)]
    for r, round_jobs in enumerate(rounds):
        assert sorted(j[0] for j in round_jobs) == sorted(j[0] for j in jobs)
        assert all(j[1] == f"repeat={r}" for j in round_jobs)
    assert rounds[0][:5] != rounds[1][:5]  # each round in its own order


def test_a_sweep_composes_and_types_once_whatever_its_batch_sizes_and_repeats(monkeypatch):
    import bsbench.job.sweep as sweep
    from bsbench.core.config import typed
    from conftest import composed

    calls, typings = [], []

    def load(overrides):
        calls.append(overrides)
        return composed("experiment=smoke", *overrides)

    monkeypatch.setattr(sweep, "typed", lambda cfg: typings.append(1) or typed(cfg))
    jobs = sweep_order([[f"batch_size={b}"] for b in range(8, 28)], 4, "interleaved", 0)
    # Hydra's composition costs about 0.25 s and the typed merge 50 ms: once for the group choices every job
    # shares (bsbench.job.sweep.composer), once for the first job (typed_jobs), whatever the batch sizes and
    # repeats (a sweep of 500 batch sizes would otherwise wait half a minute before its first job)
    seen = [(cfg.batch_size, cfg.repeat) for cfg, _ in sweep.typed_jobs(jobs, sweep.composer(load))]
    assert seen == [(b, r) for r in range(4) for b in range(8, 28)]
    assert calls == [[]] and len(typings) == 1
