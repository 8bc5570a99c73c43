"""bench.harness.env (fingerprint keys and types) and bench.harness.peak (cache, datasheet lookup)."""

from __future__ import annotations

import time

import torch

from bench.harness import env
from bench.harness.env import ENV_KEYS, env_fingerprint

EXPECTED_KEYS = [
    "device",
    "device_name",
    "torch_version",
    "git_commit",
    "python_version",
    "os",
    "hostname",
    "cpu_model",
    "cpu_count",
    "threads",
    "cuda_version",
    "cudnn_version",
    "gpu_driver",
    "gpu_clock_sm_mhz",
    "gpu_clock_mem_mhz",
    "gpu_count",
    "allow_tf32",
]


def test_env_fingerprint_keys_and_types() -> None:
    fp = env_fingerprint("cpu")
    assert list(fp) == EXPECTED_KEYS == list(ENV_KEYS)
    assert fp["device"] == "cpu"
    assert fp["torch_version"] == torch.__version__
    assert fp["threads"] == torch.get_num_threads()
    assert isinstance(fp["cpu_count"], int) and fp["cpu_count"] >= 1
    assert isinstance(fp["gpu_count"], int)
    for key in ("device_name", "git_commit", "python_version", "os", "hostname", "cpu_model"):
        assert isinstance(fp[key], str) and fp[key], key
    assert fp["device_name"] == fp["cpu_model"]
    for key in ("cuda_version", "cudnn_version", "gpu_driver", "gpu_clock_sm_mhz", "gpu_clock_mem_mhz"):
        assert fp[key] is None, key
    assert fp["allow_tf32"] is None


def test_env_fingerprint_is_quick_once_cached() -> None:
    env_fingerprint("cpu")
    t0 = time.perf_counter()
    for _ in range(10):
        env_fingerprint("cpu")
    assert time.perf_counter() - t0 < 5.0  # generous: 10 calls, each well under 0.5 s


def test_git_commit_format(tmp_path) -> None:
    commit = env.git_commit()
    assert commit == "unknown" or len(commit.removesuffix("-dirty")) == 40
    assert env.git_commit(str(tmp_path)) == "unknown"  # not a git tree
