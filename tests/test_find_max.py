"""The search of mode=find_max on its own: which sizes it tries, and that it reports only sizes that ran."""

import pytest

from bsbench.modes.find_max import search


def edge(limit, tried):
    def fits(batch_size):
        tried.append(batch_size)
        return batch_size <= limit
    return fits


def test_doubles_then_bisects_to_the_exact_edge():
    tried = []
    found = search(32, max_val=8192, train_images=45000, max_trials=25, fits=edge(100, tried))
    assert found["max_batch_size"] == 100 and found["find_max_stop"] == "memory"
    assert tried[:3] == [32, 64, 128] and set(tried) >= {100, 101}
    assert [t["batch_size"] for t in found["find_max_trials"]] == tried
    assert all(t["status"] == ("ok" if t["batch_size"] <= 100 else "oom") for t in found["find_max_trials"])


@pytest.mark.parametrize("limit", [64, 100, 127, 128])
def test_max_val_itself_is_tried_before_it_is_reported(limit):
    # Lightning's binsearch stops on reaching max_val without running it: with the edge at or above
    # half of max_val it reported 128 here for every limit
    tried = []
    found = search(32, max_val=128, train_images=45000, max_trials=25, fits=edge(limit, tried))
    assert found["max_batch_size"] == limit and found["max_batch_size"] in tried
    assert found["find_max_stop"] == ("max_val" if limit == 128 else "memory")


def test_the_training_set_bounds_the_search():
    found = search(100, max_val=8192, train_images=300, max_trials=25, fits=edge(10**6, []))
    assert found["max_batch_size"] == 300 and found["find_max_stop"] == "dataset"


def test_nothing_fits():
    found = search(8, max_val=8192, train_images=300, max_trials=25, fits=edge(0, []))
    assert found["max_batch_size"] is None and found["find_max_stop"] == "memory"
    assert [t["batch_size"] for t in found["find_max_trials"]] == [8, 4, 2, 1]


def test_running_out_of_trials_says_so_and_reports_a_size_that_ran():
    tried = []
    found = search(1, max_val=8192, train_images=45000, max_trials=5, fits=edge(1000, tried))
    assert found["find_max_stop"] == "max_trials" and found["max_batch_size"] == 16 and len(tried) == 5
