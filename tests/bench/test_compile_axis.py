"""``compile`` as a grid axis, without compiling anything: the request, the grid, the key, skip rules.

- ``RunRequest``: torch's mode names only; a mode given twice, or an unknown one, is a ``UsageError``
  naming ``--compile`` (a sweep file's ``[axes] compile`` too);
- the grid puts the compile axis after checkpointing and before the parallel strategy (a compiled row
  follows its eager twin); ``RunConfig`` keeps it through JSON and shows it in its label;
- ``config_key``: an eager key is unchanged, a compiled one appends ``|compile=<mode>`` before the
  parallel part, so a compiled ddp row's baseline is the compiled single-process row;
- skip rules: ``reduce-overhead`` needs CUDA (its CUDA graphs), ``dp`` cannot run a module compiled in
  place; the compile columns are in the schema, typed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest
import typer

from bench.cli.options import TECHNIQUE_OPTIONS, Techniques, technique_options
from bench.errors import UsageError
from bench.registry import COMPILE_MODES, get_scenario
from bench.results.schema import COLUMN_TYPES, CORE_COLUMNS, baseline_key, config_key
from bench.run.grid import RunConfig, config_skip_reason, expand_grid
from bench.run.plan import make_request
from bench.run.request import RunRequest


def test_compile_modes_are_torchs() -> None:
    assert COMPILE_MODES == (
        "none",
        "default",
        "reduce-overhead",
        "max-autotune",
        "max-autotune-no-cudagraphs",
    )
    assert RunRequest().compile == ("none",)
    assert RunRequest.build({"compile": "none, default,max-autotune"}).compile == (
        "none",
        "default",
        "max-autotune",
    )


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("fast", "--compile: unknown value 'fast'"),
        ("default,default", "--compile: 'default' given twice in 'default,default'"),
        ("none,default,none", "--compile: 'none' given twice"),
        ("", "--compile: no value given"),
    ],
)
def test_bad_compile_values_are_usage_errors_naming_the_option(value: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle.replace("(", r"\(")):
        RunRequest.build({"compile": value})


def test_a_sweep_file_sets_the_compile_axis(tmp_path: Path) -> None:
    sweep = tmp_path / "s.toml"
    sweep.write_text('scenario = "_linear"\n[axes]\ncompile = ["none", "default"]\n', encoding="utf-8")
    assert make_request(sweep=sweep).compile == ("none", "default")
    sweep.write_text('scenario = "_linear"\n[axes]\ncompile = ["default", "default"]\n', encoding="utf-8")
    with pytest.raises(UsageError, match="axes.compile: 'default' given twice"):
        make_request(sweep=sweep)


def test_the_grid_puts_compile_after_checkpointing_and_before_parallel() -> None:
    spec = get_scenario("encoder")
    configs = expand_grid(
        spec,
        preset="tiny",
        modes=["train"],
        precisions=["fp32"],
        checkpointing=["none", "full"],
        axes={},
        device="cpu",
        compile=["none", "default"],
        parallel=["none", "ddp"],
        nproc=2,
    )
    assert [(c.checkpointing, c.compile, c.parallel) for c in configs] == [
        ("none", "none", "none"),
        ("none", "none", "ddp"),
        ("none", "default", "none"),
        ("none", "default", "ddp"),
        ("full", "none", "none"),
        ("full", "none", "ddp"),
        ("full", "default", "none"),
        ("full", "default", "ddp"),
    ]
    cfg = configs[3]
    assert RunConfig.from_json(cfg.to_json()) == cfg
    assert "compile=default" in cfg.label() and "compile" not in configs[0].label()
    assert (
        RunConfig.from_json({k: v for k, v in configs[0].to_json().items() if k != "compile"}) == configs[0]
    )


def test_config_key_keeps_eager_keys_and_appends_the_mode_before_the_parallel_part() -> None:
    base = {
        "scenario": "encoder",
        "mode": "train",
        "precision": "fp32",
        "checkpointing": "none",
        "device": "cpu",
        "params": {"batch_size": 2},
    }
    eager = config_key(**base)
    assert eager == "encoder|train|fp32|none|cpu|cl=false|seed=0|batch_size=2"
    assert config_key(**base, compile="none") == eager
    comp = config_key(**base, compile="max-autotune")
    assert comp == eager + "|compile=max-autotune"
    ddp = config_key(**base, compile="max-autotune", parallel="ddp", world_size=2)
    assert ddp == comp + "|par=ddp|ws=2"
    assert baseline_key(ddp) == comp  # the compiled single-process row, not the eager one


def _cfg(**kw: object) -> RunConfig:
    fields = {
        "scenario": "encoder",
        "mode": "train",
        "precision": "fp32",
        "checkpointing": "none",
        "device": "cpu",
        "params": (("batch_size", 2),),
    }
    return RunConfig(**{**fields, **kw})  # type: ignore[arg-type]


def test_skip_rules() -> None:
    spec = get_scenario("encoder")
    reason = config_skip_reason(spec, _cfg(compile="reduce-overhead"))
    assert reason is not None and "CUDA graphs" in reason and "cpu" in reason
    for mode in ("default", "max-autotune", "max-autotune-no-cudagraphs"):
        assert config_skip_reason(spec, _cfg(compile=mode)) is None  # legal on a CPU
    assert config_skip_reason(spec, _cfg(compile="default", mode="forward")) is None
    dp = _cfg(compile="default", device="cuda", parallel="dp", world_size=2)
    from bench.run.grid import parallel_skip_reason

    assert "compile" in (parallel_skip_reason(dp) or ""), parallel_skip_reason(dp)


def test_the_compile_columns_are_typed_core_columns() -> None:
    i = CORE_COLUMNS.index("compile")
    names = ("compile", "compile_time_s", "graph_breaks", "unique_graphs", "recompiles")
    assert CORE_COLUMNS[i : i + 5] == names
    assert COLUMN_TYPES["compile"] == "str"
    assert COLUMN_TYPES["compile_time_s"] == "float"
    assert {COLUMN_TYPES[c] for c in ("graph_breaks", "unique_graphs", "recompiles")} == {"int"}


# --- the command line: one definition of the technique options ---------------------------------------


@pytest.mark.parametrize("command", ["run", "profile", "gate"])
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--compile", "fast"], "--compile: unknown value 'fast'"),
        (["--compile", "default,default"], "--compile: 'default' given twice"),
        (["--compile", "default", "--compile", "none"], "--compile: given 2 times (default, none)"),
    ],
)
def test_bad_compile_input_exits_2_naming_it(
    command: str, args: list[str], needle: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from bench.cli import app

    extra = {"run": ["--out", str(tmp_path / "r.csv")], "profile": ["-o", str(tmp_path / "p")], "gate": []}
    r = CliRunner().invoke(app, [command, "_linear", "--device", "cpu", *args, *extra[command]])
    assert r.exit_code == 2, r.output
    text = " ".join(r.output.split())
    if command == "gate" and "," in args[1]:  # the gate measures one configuration: no list at all
        needle = "--compile: unknown value 'default,default'"
    assert needle in text, r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "p").exists()  # nothing started


def test_gate_takes_compile_per_side_and_refuses_what_cannot_run(tmp_path: Path) -> None:
    from bench.gate import plan_gate

    plan = plan_gate("_linear", new_params=["compile=default"], device="cpu", preset="tiny")
    assert (plan.base.compile, plan.new.compile) == ("none", "default")
    assert "compile" not in plan.worker_config(plan.base)  # an older tree can be the eager side
    assert plan.worker_config(plan.new)["compile"] == "default"
    assert "compile" not in plan.config_dict()  # the sides differ in it
    with pytest.raises(UsageError, match="--new-param compile: unknown value 'fast'"):
        plan_gate("_linear", new_params=["compile=fast"], device="cpu")
    with pytest.raises(UsageError, match="NEW cannot run here: compile=reduce-overhead"):
        plan_gate("_linear", new_params=["compile=reduce-overhead"], device="cpu")


def test_profile_plans_one_compile_mode(tmp_path: Path) -> None:
    from bench.profile.scenario import plan_from_run_options

    plan = plan_from_run_options("_linear", out_dir=tmp_path / "p", device="cpu", compile="default")
    assert plan.compile == "default" and "compile=default" in plan.describe()
    assert plan.child_request(tmp_path / "p")["compile"] == "default"
    with pytest.raises(UsageError, match="--compile: dlbench profile traces one configuration"):
        plan_from_run_options("_linear", out_dir=tmp_path / "p", device="cpu", compile="none,default")
    with pytest.raises(UsageError, match="CUDA graphs"):
        plan_from_run_options("_linear", out_dir=tmp_path / "p", device="cpu", compile="reduce-overhead")


def test_a_fourth_command_adds_no_option_code() -> None:
    """A command declared with ``technique_options`` gets every flag, its checks and its API keywords."""
    from typer.testing import CliRunner

    app = typer.Typer()
    got: dict[str, Any] = {}

    @app.command()
    @technique_options(*TECHNIQUE_OPTIONS, grid=True, shown_defaults={"mode": "train"})
    def budget(scenario: Annotated[str, typer.Argument()], *, techniques: Techniques) -> None:
        got.update(techniques.request_kwargs())

    r = CliRunner().invoke(
        app,
        ["encoder", "--compile", "none,default", "--mode", "train", "--amp", "--batch-size", "2,4",
         "-p", "depth=1", "--parallel", "ddp", "--nproc", "2", "--seed", "3"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert got["compile"] == "none,default" and got["modes"] == "train" and got["amp"] is True
    assert got["params"] == {"depth": ["1"], "batch_size": "2,4"}
    assert (got["parallel"], got["nproc"], got["seed"]) == ("ddp", 2, 3)
    assert got["precisions"] is None and got["channels_last"] is None  # not given: the defaults apply
    assert RunRequest.build({k: v for k, v in got.items()}).compile == ("none", "default")
    help_text = " ".join(CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output.split())
    assert "--compile" in help_text and "[default: train]" in help_text
    r = CliRunner().invoke(app, ["encoder", "--seed", "1", "--seed", "2"])
    assert r.exit_code == 2 and "--seed: given 2 times" in r.output


def test_a_compiled_process_gets_a_cold_inductor_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.compiling import inductor_cache_env

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert inductor_cache_env("none", tmp_path) == {}
    assert inductor_cache_env("default", tmp_path) == {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert inductor_cache_env("default", tmp_path) == {}  # the user's warm cache, on purpose
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # what torch itself writes there
    assert inductor_cache_env("default", tmp_path) == {"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
