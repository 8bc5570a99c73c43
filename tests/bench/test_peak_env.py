"""bench.harness.env (fingerprint keys and types) and bench.harness.peak (cache, datasheet lookup)."""

from __future__ import annotations

import json
import time

import pytest
import torch

from bench.harness import env, peak
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


# --- peak -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "precision", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "amp-bf16", 989.4),
        ("NVIDIA H100 80GB HBM3", "amp-fp16", 989.4),
        ("NVIDIA H100 80GB HBM3", "tf32", 494.7),
        ("NVIDIA H100 80GB HBM3", "fp32", 66.9),
        ("NVIDIA H100 SXM5 80GB", "bf16", 989.4),
        ("NVIDIA H100 PCIe", "amp-bf16", 756.0),
        ("NVIDIA H200", "amp-bf16", 989.4),
        ("NVIDIA H200", "fp32", 66.9),
        ("NVIDIA A100-SXM4-80GB", "amp-bf16", 312.0),
        ("NVIDIA A100-PCIE-40GB", "fp32", 19.5),
        ("NVIDIA L4", "amp-fp16", 121.0),
        ("NVIDIA L40S", "amp-bf16", 362.05),  # not L4's figure ("l4" is a substring of "l40s")
        ("NVIDIA L40S", "fp32", 91.6),
        ("NVIDIA L40", "amp-bf16", None),
        ("NVIDIA H100 NVL", "amp-bf16", None),
        ("NVIDIA H200 NVL", "amp-bf16", None),
        ("AMD EPYC", "fp32", None),
        ("Some Future GPU", "amp-bf16", None),
    ],
)
def test_datasheet_peak(name: str, precision: str, expected: float | None) -> None:
    assert peak.datasheet_peak_tflops(name, precision) == expected


def test_datasheet_rejects_unknown_precision() -> None:
    with pytest.raises(ValueError, match="precision"):
        peak.datasheet_peak_tflops("NVIDIA H100 80GB HBM3", "int8")


def test_matmul_precision_on_cpu() -> None:
    assert peak.matmul_precision("fp32", "cpu") == "fp32"
    assert peak.matmul_precision("amp-bf16", "cpu") == "bf16"


def test_measured_peak_is_cached_and_reused(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLBENCH_CACHE_DIR", str(tmp_path))
    first = peak.measured_peak_tflops("cpu", "fp32", size=128)
    assert first > 0
    path = tmp_path / peak.CACHE_FILE
    data = json.loads(path.read_text())
    (key,) = [k for k in data if k.startswith("matmul|")]
    assert "torch.float32" in key and "n=128" in key and f"threads={torch.get_num_threads()}" in key
    data[key]["value"] = 123.0  # a value no CPU measures: reading it back proves the cache is used
    path.write_text(json.dumps(data))
    assert peak.measured_peak_tflops("cpu", "fp32", size=128) == 123.0
    assert peak.measured_peak_tflops("cpu", "fp32", size=128, cache=False) != 123.0
    # another dtype is another key
    assert peak.measured_peak_tflops("cpu", "amp-bf16", size=128) > 0
    assert len(json.loads(path.read_text())) == 2


def test_measured_copy_bandwidth_is_cached(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLBENCH_CACHE_DIR", str(tmp_path))
    gbs = peak.measured_copy_bandwidth_gbs("cpu", nbytes=1 << 20)
    assert gbs > 0
    assert peak.measured_copy_bandwidth_gbs("cpu", nbytes=1 << 20) == gbs
    assert any(k.startswith("copy|") for k in json.loads((tmp_path / peak.CACHE_FILE).read_text()))


@pytest.mark.gpu
def test_cuda_peak_and_env(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLBENCH_CACHE_DIR", str(tmp_path))
    fp = env_fingerprint("cuda")
    print(f"env: {json.dumps(fp)}")
    assert list(fp) == EXPECTED_KEYS
    assert fp["device_name"] and isinstance(fp["cuda_version"], str) and fp["gpu_count"] >= 1
    assert isinstance(fp["allow_tf32"], bool)
    name = fp["device_name"]
    for precision in ("amp-bf16", "fp32"):
        measured = peak.measured_peak_tflops("cuda", precision)
        sheet = peak.datasheet_peak_tflops(name, peak.matmul_precision(precision, "cuda"))
        print(f"{name} {precision}: measured {measured:.1f} TFLOP/s, datasheet {sheet}")
        assert measured > 0
        if sheet is not None:
            assert measured < 1.1 * sheet
    gbs = peak.measured_copy_bandwidth_gbs("cuda")
    print(f"{name} copy: {gbs:.0f} GB/s")
    assert gbs > 0


def test_stale_cached_peak_is_measured_again(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A peak measured long ago (perhaps on a busy machine) is not trusted forever."""
    monkeypatch.setenv("DLBENCH_CACHE_DIR", str(tmp_path))
    peak.measured_peak_tflops("cpu", "fp32", size=128)
    path = tmp_path / peak.CACHE_FILE
    data = json.loads(path.read_text())
    (key,) = data
    data[key]["value"] = 123.0
    data[key]["measured_at_unix"] -= 2 * peak.DEFAULT_CACHE_TTL_S  # older than the TTL
    path.write_text(json.dumps(data))
    assert peak.measured_peak_tflops("cpu", "fp32", size=128) != 123.0
    assert json.loads(path.read_text())[key]["value"] != 123.0  # and the cache is refreshed
    monkeypatch.setenv("DLBENCH_PEAK_TTL_S", "soon")
    with pytest.raises(ValueError, match="DLBENCH_PEAK_TTL_S"):
        peak.cache_ttl_s()


def test_git_commit_without_work_tree_uses_named_commit(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.harness.env import git_commit

    monkeypatch.delenv("DLBENCH_GIT_COMMIT", raising=False)
    git_commit.cache_clear()
    assert git_commit(str(tmp_path)) == "unknown"
    monkeypatch.setenv("DLBENCH_GIT_COMMIT", "abc123")
    git_commit.cache_clear()  # the lookup is cached per process
    assert git_commit(str(tmp_path)) == "abc123"
    git_commit.cache_clear()


@pytest.mark.parametrize(("allow_tf32", "expected"), [(True, 494.7), (False, 66.9)])
def test_mfu_datasheet_uses_tf32_peak_when_fp32_matmuls_run_as_tf32(
    monkeypatch: pytest.MonkeyPatch, allow_tf32: bool, expected: float
) -> None:
    from bench.run.measure import mfu_fields

    monkeypatch.setattr(peak, "measured_peak_tflops", lambda *a, **k: 100.0)
    notes: list[str] = []
    before = torch.backends.cuda.matmul.allow_tf32  # a cuBLAS flag, not a plain attribute: restore by hand
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    try:
        out = mfu_fields(10**12, 0.1, "cuda", "fp32", "NVIDIA H100 80GB HBM3", notes)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    assert out["peak_tflops_datasheet"] == expected
    assert out["mfu_datasheet"] == pytest.approx(10.0 / expected)
    # CPU (or a precision other than fp32) never maps to the tf32 column
    cpu = mfu_fields(10**12, 0.1, "cpu", "fp32", "NVIDIA H100 80GB HBM3", notes)
    assert cpu["peak_tflops_datasheet"] == 66.9
