import time
import types

from bsbench.training.telemetry import NvmlSampler, TelemetryCallback, summarize


def fake_nvml():
    readings = iter(range(1000))
    return types.SimpleNamespace(
        NVML_TEMPERATURE_GPU=0, NVML_CLOCK_SM=1,
        nvmlDeviceGetTemperature=lambda handle, sensor: 60 + next(readings) % 5,
        nvmlDeviceGetClockInfo=lambda handle, clock: 1980,
        nvmlDeviceGetPowerUsage=lambda handle: 350_000,
    )


def test_sampler_records_min_mean_max_while_running():
    sampler = NvmlSampler(fake_nvml(), handle=None, interval_s=0.01)
    sampler.start()
    deadline = time.monotonic() + 30  # however loaded the machine, until the sampler has read 5 times
    while len(sampler.samples["gpu_temp_c"]) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    sampler.stop()
    fields = summarize(sampler.samples)
    assert fields["telemetry_samples"] >= 5
    assert 60 <= fields["gpu_temp_c_min"] <= fields["gpu_temp_c_mean"] <= fields["gpu_temp_c_max"] <= 64
    assert fields["sm_clock_mhz_max"] == 1980 and fields["power_w_mean"] == 350.0


def test_without_nvml_the_fields_are_null():
    fields = TelemetryCallback().metrics()
    assert fields["gpu_temp_c_mean"] is None and fields["power_w_max"] is None and fields["telemetry_samples"] == 0
