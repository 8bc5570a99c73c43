"""bench.run.measure: what happens around the three passes (device selection)."""

from __future__ import annotations

import pytest
import torch

from bench.run import measure as measure_mod
from bench.run.grid import RunConfig


class _Stop(Exception):
    pass


def test_cuda_n_is_made_current_for_the_whole_measurement(monkeypatch: pytest.MonkeyPatch) -> None:
    # CUDA events and the allocator's statistics act on the current device: measuring on cuda:1
    # must make cuda:1 current before anything is built or timed, and restore the previous after.
    current = [0]
    calls: list[int] = []

    def set_device(dev: torch.device | int) -> None:
        idx = dev if isinstance(dev, int) else dev.index
        assert idx is not None
        calls.append(idx)
        current[0] = idx

    seen_while_building: list[int] = []

    def get_scenario(name: str) -> object:
        seen_while_building.append(current[0])
        raise _Stop

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[0])
    monkeypatch.setattr(measure_mod, "get_scenario", get_scenario)
    with pytest.raises(_Stop):
        measure_mod.measure(
            RunConfig(
                scenario="attention",
                mode="forward",
                precision="fp32",
                checkpointing="none",
                device="cuda:1",
                params=(),
            )  # fmt: skip
        )
    assert seen_while_building == [1]
    assert calls == [1, 0]  # cuda:1 for the measurement, then back to cuda:0
    assert current[0] == 0


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_cpu_and_bare_cuda_leave_the_current_device_alone(
    monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    calls: list[object] = []
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    with measure_mod.cuda_device_current(device):
        pass
    assert calls == []
