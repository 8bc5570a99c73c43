"""The measuring harness: every "how" of measuring a step lives here.

* ``timing``  -- ``time_step`` (adaptive sampling to a CI target) -> ``TimingResult`` with raw samples
* ``flops``   -- ``count_flops`` / ``count_flops_by_phase`` (FlopCounterMode, causal attention halved)
* ``env``     -- ``env_fingerprint`` (environment columns for every result row)
"""

from bench.harness.env import ENV_KEYS, env_fingerprint
from bench.harness.flops import count_flops, count_flops_by_phase
from bench.harness.timing import TimingResult, median_ci, time_step

__all__ = [
    "ENV_KEYS",
    "TimingResult",
    "count_flops",
    "count_flops_by_phase",
    "env_fingerprint",
    "median_ci",
    "time_step",
]
