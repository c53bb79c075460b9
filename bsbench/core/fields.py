"""What a result is: every field of results.json with its meaning, the statuses a run can end in,
and the setting that identifies a configuration. The run writes these fields, the report, the
verdict and resume read them, and docs/outputs.md's field table is this table (`python -m
bsbench.docs` writes it there; a test checks it).
Stdlib only: the report reads results without torch."""

import enum
import json
import math
from dataclasses import dataclass


class Status(str, enum.Enum):
    OK = "ok"
    OOM = "oom"  # out of memory: a finding about the configuration, not a failure of the tool
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


# Runs that answered their question: a sweep exits 0 when every run ended in one of these.
ANSWERED = (Status.OK, Status.OOM)


# Config keys that say how a sweep runs its jobs, where they land, what the terminal shows and what
# their speed is measured against (the peak of MFU), not what a job is: a resumed sweep may change
# them and still skip the jobs it already ran (bsbench.job.identity).
SWEEP_CONTROL = ("resume", "repeats", "order", "order_seed", "cooldown_s", "output_root", "verbose", "mfu",
                 "target_ci", "budget_min", "compare.rounds")


@dataclass(frozen=True)
class Fields:
    names: tuple[str, ...]
    meaning: str


RESULT_FIELDS = (
    Fields(("status",), "`ok`, `oom`, `failed` or `interrupted` (see [Failures](failures.md)); `error_type`, `error` and "
           "`traceback` say why"),
    Fields(("error_type", "error", "traceback"), "a run that did not finish: the exception's type, its first line, "
           "the whole traceback"),
    Fields(("failed_at",), "a run that did not finish: when it failed (Unix time), which tells the first failing rank"),
    Fields(("failed_rank",), "with several ranks: the rank whose failure ended the job, or that a signal killed "
           "(`error_type` `RankKilled`, `error` naming the signal)"),
    Fields(("mode",), "`train`, `throughput`, `compare`, `find_max`, `inference`, `profile` or `tune`"),
    Fields(("repeat", "sweep_position"), "which repeat of its configuration, and its place in the order of the launch "
           "that ran it (a resumed sweep numbers the jobs it runs from 0)"),
    Fields(("batch_size", "global_batch_size"), "per device, and times the number of processes"),
    Fields(("precision", "precision_used"), "as configured, and as Lightning ran it"),
    Fields(("devices", "world_size", "num_nodes", "strategy", "accelerator"),
           "as configured; `world_size` is the number of processes that trained"),
    Fields(("inference_world_size",), "the number of processes that ran inference (each on its share of the test set)"),
    Fields(("epochs",), "training epochs as the Trainer ran them (`trainer.max_epochs`); null where the mode does not "
           "train by epochs"),
    Fields(("max_steps",), "`trainer.max_steps` as the Trainer ran it; null for no limit"),
    Fields(("model", "data", "image_size", "seed"), "the setup: `model.arch` or your module's import path, "
           "`data.name` or your datamodule's; `image_size` is null where the inputs are not bsbench's images"),
    Fields(("resize_on", "channels_last", "cudnn_benchmark", "compile", "matmul_precision", "fused_adam",
            "train_acc_eval_forward"), "the settings that change speed, as configured"),
    Fields(("float32_matmul_precision", "cudnn_allow_tf32"),
           "what torch ran with: `torch.get_float32_matmul_precision()` (`matmul_precision` sets it: matrix "
           "multiplications only) and `torch.backends.cudnn.allow_tf32` (TF32 in cuDNN convolutions)"),
    Fields(("train_time_s",), "wall-clock of `fit` in seconds (see the summary table)"),
    Fields(("epoch_times_s",), "each training epoch, with its validation"),
    Fields(("first_step_time_s",), "the first training step alone (with `compile=true`, compilation is most of it); "
           "left out of every steady-state figure"),
    Fields(("compile_time_s",), "with `compile=true`: what compiling took, the first step beyond a steady-state "
           "(median) step; null for a run that did not compile. mode=tune sets it against what each compiled step "
           "saves: the steps after which compiling pays back (docs/modes/tune.md)"),
    Fields(("train_samples_per_s", "warmup_steps", "timed_steps", "timed_samples", "timed_seconds"),
           "steady-state training throughput, `timed_samples / timed_seconds`, and the steps, samples and seconds it "
           "covers (a result whose rate is not its samples over its seconds, or whose timed seconds exceed its "
           "`train_time_s`, is not read)"),
    Fields(("batch_size_observed", "optimizer_steps"),
           "what the timed steps trained: the batch size one device's training loader made in them (the most common; "
           "a run whose loader made another than `batch_size` fails rather than be labelled with one that never "
           "ran), and the optimizer steps with a gradient among them (none: the run fails, no rate of steps that "
           "train nothing)"),
    Fields(("train_samples",), "samples trained on during `fit`, counted from the batches as they ran (per-sample "
           "train time is `train_time_s / train_samples`)"),
    Fields(("step_time_mean_ms", "step_time_median_ms", "step_time_sd_ms"),
           "the timed training steps one by one (CUDA events on a GPU)"),
    Fields(("data_wait_s", "data_wait_fraction", "input_bound"),
           "the input pipeline: the time the timed steps waited for their next batch (from a step's end to the next "
           "one's start: the batch fetched and moved to the device, and Lightning's own work between steps; on a GPU "
           "the device's idle gap, from CUDA events), its share of the steps' time, and `input_bound` where that "
           "share is a fifth or more (see [the method](method.md#the-input-pipeline))"),
    Fields(("inference_time_s", "inference_samples_per_s", "test_samples"),
           "`mode=train`: inference over the test set, wall-clock, and its rate; `mode=inference`: the whole "
           "`predict` call (warm-up included) and the rate of the timed forward passes (their images over the sum "
           "of their latencies)"),
    Fields(("inference_batches", "latency_median_ms", "latency_p95_ms"),
           "`mode=inference`: the timed forward passes (after `warmup_steps` untimed ones), and the median and 95th "
           "percentile of their latency, one batch each, the device synchronized before and after it"),
    Fields(("peak_memory_mib",), "peak device memory allocated by tensors during `fit` (CUDA); null where the "
           "accelerator does not report it"),
    Fields(("val_acc", "test_acc"), "last validation accuracy, test accuracy"),
    Fields(("train_flops_per_sample", "inference_flops_per_sample", "flops_error", "flops_counted"),
           "FLOPs per sample of a training step (forward, backward and, with `train_acc_eval_forward`, the extra "
           "eval forward; your module's: its `training_step` and the loss's backward) and of an inference forward "
           "(your module's `predict_step`): matrix multiplications and convolutions, 2 per multiply-add, "
           "counted on the meta device (see [the method](method.md#how-close-to-the-hardware-flops-and-mfu)), or, "
           "where your module's step cannot run there (a torchmetrics update, a custom op), on one real warm-up "
           "training step; `flops_counted` says which; null, with `flops_error` saying why, "
           "where the model could not be counted"),
    Fields(("train_tflops", "inference_tflops"), "achieved TFLOP/s, all devices together: FLOPs per image times "
           "`train_samples_per_s` (`inference_samples_per_s`); null where the rate or the count is missing"),
    Fields(("mfu", "inference_mfu", "peak_tflops", "peak_source", "mfu_arithmetic", "mfu_reason"),
           "model FLOPs utilization: achieved TFLOP/s over `peak_tflops` (one device's dense peak for the arithmetic "
           "that ran, `fp16`, `bf16`, `tf32`, `fp32` or `fp64`) times the devices, a fraction; `peak_source` is the "
           "datasheet or `mfu.peak_tflops`; null on a device bsbench has no peak for (a CPU), `mfu_reason` says why"),
    Fields(("compare_id", "compare_batch_sizes", "round_samples_per_s"),
           "`mode=compare`: the measurement this result is one batch size of (every compared batch size has a result "
           "in its own `bs<N>/` folder, all with this id), the batch sizes compared, and this batch size's "
           "steady-state samples/s in each round (the verdict pairs them with its neighbours' of the same round)"),
    Fields(("compare_setting", "compare_settings", "compile_recompile_limit"),
           "`mode=compare` and `mode=tune`: the keys that make this result's arm (`batch_size` among them; its config "
           "holds them too), every arm of the measurement, and, where an arm compiled, the recompile limit torch ran "
           "with (raised to 8 graphs per compiled arm; hitting it fails the run rather than timing uncompiled steps)"),
    Fields(("compare_stop",), "`mode=compare` (and each race of `mode=tune`): what ended the rounds: `stop` "
           "(`target_ci`, `budget_min`, `cap`, or `one_left` where a tune's racing rule left one arm), `rounds` run, "
           "`cap` (`compare.rounds`), `target_ci`, `budget_min` (in a tune, the race's share of it, which "
           "`budget_of` names), `elapsed_s` and the widest relative 95% half-width of the comparisons, "
           "`widest_half_width`"),
    Fields(("profile_traces", "profile_count", "profile_steps", "profile_kind"),
           "`mode=profile`: the trace files (`profile/bs<N>_p<k>.pt.trace.json`, one per profile, Perfetto and "
           "TensorBoard open them; relative to `trainer.default_root_dir`, the job's folder unless set apart), how "
           "many, the traced training steps in each, and what was timed: "
           "`kernel` (GPU kernels by device time) or `operator` (`aten::` operators by self CPU time, on a CPU)"),
    Fields(("profile_ops", "profile_top"),
           "`mode=profile`: every kernel or operator in the traces, largest first, with its time per sample in each "
           "profile (`us_per_sample`, µs per image, 0 where a profile did not run it), `calls_per_step`, its `share` "
           "of the step's wall-clock and whether it is a matrix multiplication or convolution (`matmul`); "
           "`profile_top`: the first `profile.top` of them with their mean time per sample"),
    Fields(("profile_step_us_per_sample", "profile_matmul_share"),
           "`mode=profile`: the traced steps' wall-clock per sample in each profile (µs), and the share of it spent "
           "in matrix multiplications and convolutions"),
    Fields(("max_batch_size", "find_max_stop", "find_max_trials"),
           "`mode=find_max` (and `mode=tune`'s edge): the largest batch size that ran, what ended the search (`memory`, "
           "`max_val`, `dataset`, `max_trials`, or mode=tune's `budget`, `tune.max_batch_size` or `tune.effective_batch`), "
           "and every batch "
           "size tried with its outcome"),
    Fields(("energy_j", "joules_per_sample", "energy_reason", "round_joules_per_sample"),
           "energy over the timed steps (or timed forward passes), every rank's GPU together, from NVML's total-energy "
           "counter (Volta and newer; the whole board), and per image; null elsewhere, with `energy_reason` saying "
           "why; `mode=compare` and `mode=tune`: joules per image in each round"),
    Fields(("tune_stage", "tune_job_id", "tune_start", "tune_not_measured", "report_row"),
           "`mode=tune`: which stage measured this result (`edge`, `knobs`, `batch`, `near`, `confirm`, and `scale` on "
           "several devices), the tune it "
           "belongs to, the starting configuration it was tuned from, the stage's settings the budget left unmeasured; "
           "`report_row` false: a result that measured nothing itself (the edge search, the tune's summary), left "
           "out of the tables"),
    Fields(("tune_decision", "tune_best", "tune_speedup", "tune_resolution", "tune_basis", "tune_basis_reason",
            "tune_best_samples_per_s",
            "tune_best_ci", "tune_edge", "tune_chosen_knobs", "tune_skipped", "tune_elapsed_s", "tune_pipeline",
            "tune_effective_batch", "tune_step_time_s", "tune_scaling"),
           "`mode=tune`'s summary (`results.json` in the tune's folder): the advice, `change` or `keep` (keep unless a "
           "change was clearly faster than the starting configuration: [the decision rule](modes/tune.md)); the "
           "setting advised (the start's batch size and the keys it changes; the start itself for keep); its "
           "difference against the start (`ratio`, `ci_low`, `ci_high`, the interval's `confidence`, simultaneous "
           "over `comparisons`, or `reason`); for keep, the smallest difference the tune could have shown "
           "(`detectable`) and what `budget_min` would show half of it; the race the advice rests on (`confirm`, or "
           "an earlier one, and why: the budget ended first, nothing to confirm, the confirm gave no interval); the advised setting's samples/s with a 95% interval; the "
           "memory edge; the knobs the batch races ran with; the stages the budget left out; the time the tune took, "
           "earlier runs of it (resume=) included; `tune_pipeline`: the same steps on your loader's batches replayed "
           "from the device against yours (the ratio and its 95% interval: what waiting for data costs); "
           "`tune_effective_batch`: the samples per optimizer step the tune kept, where the advice gives "
           "`trainer.accumulate_grad_batches` beside `batch_size` (null: the batch size was free), and "
           "`tune_step_time_s` the advised setting's seconds per optimizer step; `tune_scaling`, on several devices: the advised setting on "
           "every device against one device at the same batch per device, in paired rounds (`devices`, `speedup`, "
           "`efficiency` = speedup / devices with its 95% interval `ci_low` to `ci_high`, `rounds`, or `reason`)"),
    Fields(("gpu_temp_c_min", "gpu_temp_c_mean", "gpu_temp_c_max", "sm_clock_mhz_min", "sm_clock_mhz_mean",
            "sm_clock_mhz_max", "power_w_min", "power_w_mean", "power_w_max", "telemetry_samples"),
           "NVML telemetry during training; null without NVML"),
    Fields(("load_avg_1m", "machine_cpu_load", "other_cpu_load", "gpu_other_processes", "busy", "busy_reason"),
           "the noise sentinel (see [the method](method.md#a-busy-machine-the-noise-sentinel)): the machine's 1-minute "
           "load average when the job ended; the CPU cores' worth of time the whole machine, and other processes than "
           "the job's own, spent while it ran (Linux only); the most other processes seen on its GPU (NVML); `busy`: "
           "whether the machine had no core to spare while others held some, or others shared its GPU, `busy_reason` "
           "says which; null where it could not be measured"),
    Fields(("nonfinite_values",), "fields whose value was not a finite number (NaN or an infinity, which JSON "
           "cannot hold), written null: each field's path with the value it had, as text"),
    Fields(("started_at", "finished_at"), "local time, ISO 8601, to the millisecond"),
    Fields(("device_type", "device_name", "sm_count", "device_memory_gib"), "the device; SMs and memory on CUDA GPUs"),
    Fields(("torch_version", "lightning_version", "cuda_version", "cudnn_version", "python_version"),
           "the software (CUDA and cuDNN as torch was built with them)"),
    Fields(("host", "cpu_count"), "the machine"),
    Fields(("torch_num_threads", "torch_num_interop_threads", "omp_num_threads"),
           "torch's intra-op and inter-op threads in the process that wrote the result, and `OMP_NUM_THREADS` as it "
           "saw it (null: not set); a DDP job's ranks share one process's threads (see [Several devices](clusters.md#several-devices-ddp-inside-a-sweep))"),
    Fields(("run_dir", "overrides"), "where the result lies and the job's command-line overrides"),
    Fields(("slurm_job_id", "slurm_state"), "`hydra/launcher=slurm`: the SLURM job that ran it (`<array>_<task>`, "
           "as `squeue` and `scancel` name it; its logs are in the sweep's `.submitit/<slurm_job_id>/`) and, where "
           "the job ended without finishing, the state SLURM ended it in (`CANCELLED`, `TIMEOUT`, `NODE_FAIL`, ...); "
           "null outside SLURM"),
    Fields(("job_id",), "what the job is, as a hash of its config less sweep control ("
           + ", ".join(f"`{key}`" for key in SWEEP_CONTROL) + ") and its own directory: a resumed sweep skips a job "
           "whose `job_id` has an `ok` result, and the job's directory is named after it"),
    Fields(("nonfinite_loss_steps",), "training steps whose loss was NaN or infinite (counted on the device, read "
           "once at the end); the timings stand, the accuracy does not"),
    Fields(("config",), "the whole composed config, typed and resolved, to reproduce the run; every key of it but "
           "the batch size, the repeat and bookkeeping (`seed`, `order`, `output_root`, `logger`, ...) is the run's "
           "setting, by which summaries, verdicts and `resume` tell configurations apart"),
)
FIELD_NAMES = tuple(name for group in RESULT_FIELDS for name in group.names)

# Each field's type, as results.json holds it: every field may also be null (a run that did not get
# that far, a mode that has no such figure), except `status` and `batch_size`. A file whose fields are
# not of their types, or whose rates are not positive, is not a result the report or resume uses
# (bsbench.core.results.problem). `any`: whatever the mode writes there (a setting, a tune's summary).
KINDS = ("str", "int", "count", "size", "number", "nonnegative", "rate", "bool", "list", "numbers", "object", "any")
FIELD_KINDS = {
    "status": "str", "error_type": "str", "error": "str", "traceback": "str", "failed_at": "number",
    "failed_rank": "int", "mode": "str", "repeat": "count", "sweep_position": "int", "batch_size": "size",
    "global_batch_size": "size", "precision": "str", "precision_used": "str", "devices": "any", "world_size": "size",
    "num_nodes": "size", "strategy": "str", "accelerator": "str", "inference_world_size": "size", "epochs": "int",
    "max_steps": "int", "model": "str", "data": "str", "image_size": "int", "seed": "int", "resize_on": "str",
    "channels_last": "bool", "cudnn_benchmark": "bool", "compile": "bool", "matmul_precision": "str",
    "fused_adam": "bool", "train_acc_eval_forward": "bool", "float32_matmul_precision": "str",
    "cudnn_allow_tf32": "bool", "train_time_s": "nonnegative", "epoch_times_s": "numbers", "first_step_time_s": "nonnegative", "compile_time_s": "nonnegative",
    "train_samples_per_s": "rate", "warmup_steps": "count", "timed_steps": "count", "train_samples": "count",
    "timed_samples": "count", "timed_seconds": "nonnegative",
    "step_time_mean_ms": "nonnegative", "step_time_median_ms": "nonnegative", "step_time_sd_ms": "nonnegative",
    "batch_size_observed": "size", "optimizer_steps": "count", "data_wait_s": "nonnegative", "data_wait_fraction": "nonnegative",
    "input_bound": "bool", "flops_counted": "str",
    "inference_time_s": "nonnegative", "inference_samples_per_s": "rate", "test_samples": "count",
    "inference_batches": "count", "latency_median_ms": "nonnegative", "latency_p95_ms": "nonnegative",
    "peak_memory_mib": "nonnegative", "val_acc": "number", "test_acc": "number", "train_flops_per_sample": "nonnegative",
    "inference_flops_per_sample": "nonnegative", "flops_error": "str", "train_tflops": "number",
    "inference_tflops": "number", "mfu": "number", "inference_mfu": "number", "peak_tflops": "number",
    "peak_source": "str", "mfu_arithmetic": "str", "mfu_reason": "str", "compare_id": "str",
    "compare_batch_sizes": "numbers", "round_samples_per_s": "numbers", "compare_setting": "object",
    "compare_settings": "list", "compile_recompile_limit": "int", "compare_stop": "object", "profile_traces": "list",
    "profile_count": "int", "profile_steps": "int", "profile_kind": "str", "profile_ops": "list",
    "profile_top": "list", "profile_step_us_per_sample": "numbers", "profile_matmul_share": "number",
    "max_batch_size": "int", "find_max_stop": "str", "find_max_trials": "list", "energy_j": "nonnegative",
    "joules_per_sample": "nonnegative", "energy_reason": "str", "round_joules_per_sample": "list", "tune_stage": "str",
    "tune_job_id": "str", "tune_start": "any", "tune_not_measured": "list", "report_row": "bool", "tune_edge": "any",
    "tune_best": "any", "tune_decision": "str", "tune_resolution": "any", "tune_basis": "str", "tune_basis_reason": "str",
    "tune_chosen_knobs": "any", "tune_pipeline": "any", "tune_skipped": "list", "tune_best_samples_per_s": "number", "tune_best_ci": "any",
    "tune_speedup": "any", "tune_elapsed_s": "nonnegative",
    "tune_effective_batch": "any", "tune_step_time_s": "nonnegative", "tune_scaling": "any",
    "gpu_temp_c_min": "number", "gpu_temp_c_mean": "number", "gpu_temp_c_max": "number",
    "sm_clock_mhz_min": "number", "sm_clock_mhz_mean": "number", "sm_clock_mhz_max": "number",
    "power_w_min": "number", "power_w_mean": "number", "power_w_max": "number", "telemetry_samples": "count",
    "load_avg_1m": "number", "machine_cpu_load": "number", "other_cpu_load": "number",
    "gpu_other_processes": "int", "busy": "bool",
    "busy_reason": "str", "nonfinite_values": "object", "started_at": "str", "finished_at": "str", "device_type": "str",
    "device_name": "str", "sm_count": "int", "device_memory_gib": "number", "torch_version": "str",
    "lightning_version": "str", "cuda_version": "str", "cudnn_version": "int", "python_version": "str",
    "host": "str", "cpu_count": "count", "torch_num_threads": "int", "torch_num_interop_threads": "int",
    "omp_num_threads": "str", "run_dir": "str", "overrides": "list", "slurm_job_id": "str", "slurm_state": "str",
    "job_id": "str", "nonfinite_loss_steps": "count", "config": "object",
}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def of_kind(value, kind: str) -> bool:
    """Whether a (non-null) value is of a field's kind."""
    if kind == "any":
        return True
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "number":
        return _number(value)
    if kind == "rate":
        return _number(value) and value > 0
    if kind == "nonnegative":
        return _number(value) and value >= 0
    if kind == "count":
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if kind == "size":
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if kind == "list":
        return isinstance(value, list)
    if kind == "numbers":
        return isinstance(value, list) and all(_number(v) for v in value)
    if kind == "object":
        return isinstance(value, dict)
    raise ValueError(f"unknown kind {kind!r}")


KIND_WORDS = {"str": "a string", "int": "an integer", "number": "a finite number", "rate": "a positive number",
              "nonnegative": "a number from 0", "count": "a count, an integer from 0", "size": "an integer from 1",
              "bool": "true or false", "list": "a list", "numbers": "a list of finite numbers",
              "object": "a JSON object", "any": "anything"}

# Config keys that never make two runs different configurations in a report: the batch size and the
# repeat are the axes it compares along, the seed and the logger change no speed, and the others are
# sweep control or the run's own directory.
# Config sections that only their own mode reads: part of that mode's jobs and settings only.
MODE_SECTIONS = ("inference", "profile", "tune")  # bsbench.modes: each mode's `sections`
NOT_SETTING = (*SWEEP_CONTROL, "batch_size", "repeat", "seed", "logger", "trainer.default_root_dir")


def fields_markdown() -> str:
    """The documentation's table of result fields (docs/outputs.md)."""
    lines = ["| field | type | meaning |", "| --- | --- | --- |"]
    for group in RESULT_FIELDS:
        kinds = [FIELD_KINDS[n] for n in group.names]
        kind = kinds[0] if len(set(kinds)) == 1 else ", ".join(f"{n}: {k}" for n, k in zip(group.names, kinds))
        lines.append(f"| {', '.join(f'`{n}`' for n in group.names)} | {kind} | {group.meaning} |")
    return "\n".join(lines) + "\n"


def flatten(config: dict, prefix: str = "") -> dict:
    """{'data': {'name': 'x'}} -> {'data.name': 'x'}; an empty mapping stays a value."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def without(flat: dict, keys) -> dict:
    """A flattened config less the given keys and everything under them, sorted by key."""
    keys = set(keys)

    def kept(key: str) -> bool:
        parts = key.split(".")
        return not any(".".join(parts[:i]) in keys for i in range(1, len(parts) + 1))

    return {key: value for key, value in sorted(flat.items()) if kept(key)}


def setting_of(config: dict) -> dict:
    """The setting of a resolved config: every key but the batch size, the repeat, bookkeeping and the
    sections of modes other than its own."""
    other_modes = [section for section in MODE_SECTIONS if config.get("mode") != section]
    unset = ["compare.settings"] if not (config.get("compare") or {}).get("settings") else []
    return without(flatten(config), (*NOT_SETTING, *other_modes, *unset))


def setting(result: dict) -> dict:
    """A result's setting, from the config it recorded."""
    return setting_of(result.get("config") or {})


def setting_key(setting_: dict) -> str:
    return json.dumps(setting_, sort_keys=True, default=str)
