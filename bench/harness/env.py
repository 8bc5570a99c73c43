"""Environment fingerprint: what a result row needs to say where it came from.

Every key becomes a CSV column (names are part of the results schema). Values are ``None`` where
they do not apply (GPU fields on a CPU run). Nothing here may fail or hang: ``nvidia-smi`` and
``git`` run with short timeouts, and the git commit, CPU model and GPU static facts are cached per
process, so a call costs well under 0.5 s on CPU.
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import torch

ENV_KEYS: tuple[str, ...] = (
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
)

_REPO_ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], timeout: float = 2.0, cwd: Path | None = None) -> str | None:
    """stdout of ``cmd`` stripped, or None on any failure (missing binary, error, timeout)."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


@cache
def git_commit(repo: str | None = None) -> str:
    """HEAD of the dlbench checkout, with ``-dirty`` when tracked or untracked (not ignored) files differ.

    ``"unknown"`` when the package does not live in a git work tree or git is missing, unless
    ``$DLBENCH_GIT_COMMIT`` names the commit (a copy of the tree without ``.git``, as on a GPU machine).
    """
    root = Path(repo) if repo else _REPO_ROOT
    head = _run(["git", "rev-parse", "HEAD"], cwd=root)
    if not head:
        return os.environ.get("DLBENCH_GIT_COMMIT") or "unknown"
    status = _run(["git", "status", "--porcelain"], cwd=root, timeout=5.0)
    return f"{head}-dirty" if status else head


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """CPU model string (``/proc/cpuinfo`` model name on Linux, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _cuda_index(device: str) -> int:
    d = torch.device(device)
    return d.index if d.index is not None else torch.cuda.current_device()


def _nvml_info(index: int) -> dict[str, Any] | None:
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        try:
            h = pynvml.nvmlDeviceGetHandleByIndex(index)
            driver = pynvml.nvmlSystemGetDriverVersion()
            return {
                "gpu_driver": driver.decode() if isinstance(driver, bytes) else str(driver),
                "gpu_clock_sm_mhz": int(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)),
                "gpu_clock_mem_mhz": int(pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM)),
            }
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVML errors are many and version-specific; a fingerprint must never fail
        return None


def _nvidia_smi_info(index: int) -> dict[str, Any] | None:
    out = _run(
        [
            "nvidia-smi",
            f"--id={index}",
            "--query-gpu=driver_version,clocks.sm,clocks.mem",
            "--format=csv,noheader,nounits",
        ],
        timeout=3.0,
    )
    if not out:
        return None
    parts = [p.strip() for p in out.splitlines()[0].split(",")]
    if len(parts) != 3:
        return None

    def _int(s: str) -> int | None:
        try:
            return int(float(s))
        except ValueError:
            return None

    return {"gpu_driver": parts[0], "gpu_clock_sm_mhz": _int(parts[1]), "gpu_clock_mem_mhz": _int(parts[2])}


def gpu_info(index: int) -> dict[str, Any]:
    """Driver version and current SM / memory clocks (MHz): NVML, else ``nvidia-smi``; None if unknown."""
    info = _nvml_info(index) or _nvidia_smi_info(index)
    return info or {"gpu_driver": None, "gpu_clock_sm_mhz": None, "gpu_clock_mem_mhz": None}


def env_fingerprint(device: str = "cpu") -> dict[str, Any]:
    """Environment columns for a result row on ``device`` (keys: ``ENV_KEYS``, in that order)."""
    is_cuda = device.startswith("cuda") and torch.cuda.is_available()
    cpu = cpu_model()
    fp: dict[str, Any] = {
        "device": device,
        "device_name": cpu,
        "torch_version": torch.__version__,
        "git_commit": git_commit(),
        "python_version": platform.python_version(),
        "os": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu_model": cpu,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda_version": None,
        "cudnn_version": None,
        "gpu_driver": None,
        "gpu_clock_sm_mhz": None,
        "gpu_clock_mem_mhz": None,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "allow_tf32": None,
    }
    if is_cuda:
        index = _cuda_index(device)
        fp["device_name"] = torch.cuda.get_device_name(index)
        fp["cuda_version"] = torch.version.cuda
        fp["cudnn_version"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        fp["allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
        fp.update(gpu_info(index))
    return fp


if __name__ == "__main__":  # pragma: no cover - manual inspection helper
    import json

    json.dump(env_fingerprint(sys.argv[1] if len(sys.argv) > 1 else "cpu"), sys.stdout, indent=2)
    print()
