"""The grid: every combination of the run's axes as a ``RunConfig``, validated before any work.

``expand_grid`` turns axes (modes x precisions x checkpointing x scenario parameters) into
``RunConfig`` s; the order is parameters outermost, then mode, precision, checkpointing. A scenario
field named ``channels_last`` set to true and ``--channels-last`` are folded together (both true
when either is). Each point builds its scenario config, so a value a builder would reject fails
here (``ValueError``), in the parent.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench import results
from bench.registry import ScenarioSpec


@dataclass(frozen=True)
class RunConfig:
    """One point of the grid: everything that identifies what is measured."""

    scenario: str
    mode: str
    precision: str
    checkpointing: str
    device: str
    params: tuple[tuple[str, Any], ...]  # every config field, in dataclass order
    preset: str = "default"
    seed: int = 0
    channels_last: bool = False

    @property
    def params_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def key(self) -> str:
        """``bench.results.config_key`` of this configuration (what ``--resume`` matches on)."""
        return results.config_key(
            scenario=self.scenario,
            mode=self.mode,
            precision=self.precision,
            checkpointing=self.checkpointing,
            device=self.device,
            params=self.params_dict,
            channels_last=self.channels_last,
            seed=self.seed,
        )

    def label(self, varying: Sequence[str] | None = None) -> str:
        """Short human label: mode, precision, checkpointing, and the parameters in ``varying``."""
        parts = [self.mode, self.precision]
        if self.checkpointing != "none":
            parts.append(f"ckpt={self.checkpointing}")
        p = self.params_dict
        for name in varying if varying is not None else ():
            if name in p:
                parts.append(f"{name}={p[name]}")
        return " ".join(parts)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RunConfig:
        """Inverse of ``to_json``."""
        return cls(
            scenario=d["scenario"],
            mode=d["mode"],
            precision=d["precision"],
            checkpointing=d["checkpointing"],
            device=d["device"],
            params=tuple(dict(d["params"]).items()),
            preset=d.get("preset", "default"),
            seed=int(d.get("seed", 0)),
            channels_last=bool(d.get("channels_last", False)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "mode": self.mode,
            "precision": self.precision,
            "checkpointing": self.checkpointing,
            "device": self.device,
            "params": dict(self.params),
            "preset": self.preset,
            "seed": self.seed,
            "channels_last": self.channels_last,
        }


def expand_grid(
    spec: ScenarioSpec,
    *,
    preset: str,
    modes: Sequence[str],
    precisions: Sequence[str],
    checkpointing: Sequence[str],
    axes: Mapping[str, Sequence[Any]],
    device: str,
    seed: int = 0,
    channels_last: bool = False,
) -> list[RunConfig]:
    """Every combination of the axes, each validated by building its config (ValueError if bad)."""
    names = list(axes)
    out: list[RunConfig] = []
    seen: set[str] = set()
    for values in itertools.product(*(list(axes[n]) for n in names)):
        overrides = dict(zip(names, values, strict=True))
        cfg = spec.make_config(preset, **overrides)
        params = tuple((f, getattr(cfg, f)) for f in spec.parameters())
        # A config field named channels_last and --channels-last measure the same thing: either
        # sets both, so the row's channels_last column and the config_key agree.
        cl = channels_last or getattr(cfg, "channels_last", None) is True
        if cl:
            params = tuple(
                (f, True if f == "channels_last" and isinstance(v, bool) else v) for f, v in params
            )
        for mode, precision, ckpt in itertools.product(modes, precisions, checkpointing):
            rc = RunConfig(
                scenario=spec.name,
                mode=mode,
                precision=precision,
                checkpointing=ckpt,
                device=device,
                params=params,
                preset=preset,
                seed=seed,
                channels_last=cl,
            )
            if rc.key not in seen:
                seen.add(rc.key)
                out.append(rc)
    return out


def varying_params(configs: Sequence[RunConfig]) -> list[str]:
    """Names of the parameters that take more than one value across ``configs``."""
    if not configs:
        return []
    names = [n for n, _ in configs[0].params]
    return [n for n in names if len({repr(c.params_dict.get(n)) for c in configs}) > 1]


def config_skip_reason(spec: ScenarioSpec, cfg: RunConfig) -> str | None:
    """Why ``cfg`` is reported as ``skipped`` without running, or None."""
    if cfg.mode not in spec.modes:
        return f"scenario {spec.name!r} has no mode {cfg.mode!r} (its modes: {list(spec.modes)})"
    if cfg.mode in spec.unsupported_modes:
        return spec.unsupported_modes[cfg.mode]
    return skip_reason(cfg.device, cfg.mode, cfg.precision, cfg.checkpointing)


def skip_reason(device: str, mode: str, precision: str, checkpointing: str) -> str | None:
    """Why this combination cannot run here, or None. Checked before any child process starts."""
    from bench.registry import CHECKPOINTING, PRECISIONS

    if precision not in PRECISIONS:
        return f"precision {precision!r} unknown; expected one of {PRECISIONS}"
    if checkpointing not in CHECKPOINTING:
        return f"checkpointing {checkpointing!r} unknown; expected one of {CHECKPOINTING}"
    if precision == "amp-fp16" and not device.startswith("cuda"):
        return "amp-fp16 needs a CUDA device (fp16 autocast with GradScaler is GPU-only); use amp-bf16 on CPU"
    if checkpointing != "none" and mode != "train":
        return "activation checkpointing only changes training (it recomputes activations in backward)"
    return None
