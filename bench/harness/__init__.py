"""The measuring harness: every "how" of measuring a step lives here.

* ``timing``  -- ``time_step`` (adaptive sampling to a CI target) -> ``TimingResult`` with raw samples
* ``memory``  -- ``measure_memory`` (per-phase peaks; params / grads / optimizer / activations bytes)
* ``flops``   -- ``count_flops`` / ``count_flops_by_phase`` (FlopCounterMode, causal attention halved)
* ``peak``    -- measured (cached) and datasheet peak TFLOP/s, measured copy bandwidth, for MFU
* ``env``     -- ``env_fingerprint`` (environment columns for every result row)
* ``noise``   -- ``NoiseMonitor`` (other processes' CPU and steal time over the timing window)
* ``energy_meter`` -- ``EnergyMeter`` (Zeus's energy-counter window around the timed steps) and
  ``energy`` -- ``EnergyResult`` (joules per step and per item, average power; merged over ranks)
"""

from bench.harness.env import ENV_KEYS, env_fingerprint
from bench.harness.flops import count_flops, count_flops_by_phase
from bench.harness.memory import MemoryResult, measure_memory
from bench.harness.peak import (
    datasheet_peak_tflops,
    matmul_precision,
    measured_copy_bandwidth_gbs,
    measured_peak_tflops,
)
from bench.harness.timing import TimingResult, median_ci, time_step

__all__ = [
    "ENV_KEYS",
    "MemoryResult",
    "TimingResult",
    "count_flops",
    "count_flops_by_phase",
    "datasheet_peak_tflops",
    "env_fingerprint",
    "matmul_precision",
    "measured_copy_bandwidth_gbs",
    "measured_peak_tflops",
    "measure_memory",
    "median_ci",
    "time_step",
]
