"""A sweep is planned from one Hydra composition per choice of config groups: every job's config is
what Hydra would have composed for it, value for value (bsbench.job.sweep.composer)."""

import pytest
from omegaconf import OmegaConf

from bsbench.core.config import typed
from bsbench.job.identity import job_id
from bsbench.job.sweep import composer
from conftest import SMOKE, composed

JOBS = [
    ["batch_size=30"],
    ["batch_size=31", "repeat=2"],
    ["mode=throughput", "trainer.max_steps=7", "timing.warmup_steps=2", "batch_size=16"],
    ["mode=throughput", "trainer.max_steps=9", "precision=bf16-mixed", "channels_last=true", "batch_size=17"],
    ["mode=compare", "compare.batch_sizes=[15,16]", "compare.settings=[{channels_last:false},{channels_last:true}]"],
    ["mode=compare", "compare.batch_sizes=[16,17]", "target_ci=null", "compare.rounds=3"],
    ["logger=csv", "model.lr=0.01", "data.image_size=64", "trainer.max_epochs=${epochs}", "epochs=2"],
    ["+callbacks.fault._target_=faults.FailOnRank", "+callbacks.fault.rank=1", "batch_size=33"],
    ["model=custom", "model._target_=toy.TinyNet", "data=synthetic", "+model.width=8", "batch_size=12"],
    ["hydra/launcher=submitit_local", "batch_size=34", "compile=yes"],
    ["devices=2", "strategy=ddp", "batch_size=35"],
    # as the launcher gets them: each job with its folder (values of Hydra's node, not composed again)
    ["batch_size=36", "hydra.sweep.dir='/tmp/a b/sweep'", "hydra.sweep.subdir=bs36_r0_x"],
    ["mode=throughput", "batch_size=37", "hydra.sweep.dir=/tmp/sweep", "hydra.sweep.subdir=bs37_r0_y"],
]


def test_each_job_is_what_hydra_composes_for_it_with_one_composition_per_group_choice():
    calls = []

    def load(overrides):
        calls.append(overrides)
        return composed(*SMOKE, *overrides)

    compose = composer(load)
    for job in [*JOBS, *JOBS]:  # the second time from the compositions already made: none of them changed
        planned, hydras = compose(job), composed(*SMOKE, *job)
        # Hydra's node too: the launcher takes the job's config from here (bsbench.job.sweep.PlannedLoader)
        assert OmegaConf.to_container(planned) == OmegaConf.to_container(hydras), job
        planned, hydras = typed(planned), typed(hydras)
        assert OmegaConf.to_container(planned) == OmegaConf.to_container(hydras), job
        assert job_id(planned) == job_id(hydras), job
        # a job id reads the config as it is (logger=csv's directory from Hydra is nulled and put back)
        assert OmegaConf.to_container(planned) == OmegaConf.to_container(hydras), job
    # the value overrides of a job never reach Hydra: the jobs above hold 7 distinct group choices
    assert len(calls) == 7 and all("batch_size=30" not in c and not any("sweep" in o for o in c) for c in calls)


def test_a_value_of_the_wrong_type_is_refused_as_before(tmp_path):
    from bsbench.core.errors import UserError

    compose = composer(lambda overrides: composed(*SMOKE, *overrides))
    with pytest.raises(UserError, match=r"^compile=maybe is not true or false"):
        typed(compose(["compile=maybe"]))


def test_jobs_that_differ_in_values_are_typed_from_the_first_as_the_typed_merge_types_them():
    from bsbench.job.identity import JobIds
    from bsbench.job.sweep import typed_jobs

    compose = composer(lambda overrides: composed(*SMOKE, *overrides))
    compare = ["mode=compare", "data=synthetic", "compare.batch_sizes=[8,9]"]
    jobs = [*JOBS, ["batch_size=31", "repeat=5"], ["batch_size='40'", "repeat=0"], ["batch_size=32", "repeat=1"],
            ["batch_size=${epochs}", "repeat=1"],
            ["mode=throughput", "trainer.max_steps=8", "timing.warmup_steps=1", "batch_size=18"],
            ["logger=csv", "model.lr=0.5", "data.image_size=32", "trainer.max_epochs=${epochs}", "epochs=3"],
            ["data=synthetic", "epochs=3"], ["data=synthetic", "epochs=4"], [*compare, "batch_size=7"],
            [*compare, "batch_size=6"],
            ["hydra/launcher=submitit_local", "batch_size=35", "compile=no"]]
    # and each job's id as the plan gives it: from the first job of its kind where an interpolation does not
    # read what changed (trainer.max_epochs is ${epochs}), and the batch size not part of a compare job
    identify, ids, kinds = JobIds(), [], []
    for job, (cfg, changed) in zip(jobs, typed_jobs(jobs, compose)):
        expected = typed(composed(*SMOKE, *job))
        assert OmegaConf.to_container(cfg) == OmegaConf.to_container(expected), job
        assert identify(cfg, changed) == job_id(cfg) == job_id(expected), job
        ids.append(job_id(expected))
        kinds.append(changed)
    assert ids[-2] == ids[-3] and ids[-4] != ids[-5] and ids[-7] != ids[-8]
    assert kinds[-5:-1] == [(), ("epochs",), (), ("batch_size",)]
    # and a value the schema refuses is refused as the typed merge refuses it
    from bsbench.core.errors import UserError

    with pytest.raises(UserError, match=r"^compile=maybe is not true or false"):
        list(typed_jobs([["compile=no"], ["compile=maybe"]], compose))

