"""Your model as a scenario: names, generated configs, block detection, entry points and bad input.

Everything here runs in this process except the entry-point listing (a fresh interpreter, so that
what ``dlbench list`` imports can be seen). Bad input exits 2 naming the file, attribute or parameter,
before any output file is written; a factory that fails only inside the child is an ``error`` row.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from bench import api
from bench.cli import app
from bench.foreign.blocks import block_paths, blocks_by_name, detect_blocks
from bench.foreign.names import SCENARIO_DIR_ENV, parse_name, resolve_path
from bench.registry import CHILD_ENV_VAR, BuildContext, get_scenario
from bench.workload import build_step

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = "tests/fixtures/tiny_gpt.py:build"
FIXTURE_ABS = f"{ROOT / 'tests/fixtures/tiny_gpt.py'}:build"
FAST = {"max_time_s": 0.05, "target_rel_ci": 0.5, "progress": False, "device": "cpu", "isolation": False}
runner = CliRunner()


def invoke(*args: str) -> Any:
    return runner.invoke(app, list(args))


@pytest.fixture(autouse=True)
def _scenario_dir_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Resolving a relative name records the directory in the environment; put it back afterwards."""
    monkeypatch.setenv(SCENARIO_DIR_ENV, "")


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --- names ------------------------------------------------------------------------------------------


def test_every_form_of_name_parses_to_its_kind() -> None:
    assert parse_name("timm:resnet50").kind == "timm" and parse_name("hf:gpt2").target == "gpt2"
    f = parse_name("./models/gpt.py:build")
    assert (f.kind, f.canonical, f.target, f.attr) == (
        "file",
        "models/gpt.py:build",
        "models/gpt.py",
        "build",
    )
    assert parse_name("mypkg.models:Zoo.gpt").kind == "module"
    assert parse_name("mymodel").kind == "entry"
    for bad in ("x.py:", "x.py:not-an-identifier", "a b:c", "hf:"):
        with pytest.raises(ValueError, match="scenario"):
            parse_name(bad)


def test_a_relative_path_resolves_against_the_planning_process_in_every_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv(CHILD_ENV_VAR, raising=False)
    monkeypatch.setenv(SCENARIO_DIR_ENV, "/elsewhere")
    assert resolve_path("tests/fixtures/tiny_gpt.py") == ROOT / "tests/fixtures/tiny_gpt.py"
    assert os.environ[SCENARIO_DIR_ENV] == str(ROOT)  # recorded for the processes it starts
    # a child (run child, rank, gate worker) in another working directory resolves it the same way
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(CHILD_ENV_VAR, "1")
    assert resolve_path("tests/fixtures/tiny_gpt.py") == ROOT / "tests/fixtures/tiny_gpt.py"
    spec = get_scenario(FIXTURE)
    assert spec.name == FIXTURE  # rows record the name as given, normalised


# --- the generated config -----------------------------------------------------------------------------


def test_factory_parameters_become_a_checked_grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    spec = get_scenario(FIXTURE)
    assert spec.parameters() == {
        "batch_size": 4, "seq_len": 16, "width": 32, "depth": 2, "heads": 2, "ffn_mult": 4,
        "vocab_size": 64, "fail": "no", "checkpoint_blocks": "",
    }  # fmt: skip
    assert spec.describe_parameter("width") == "int, a positive integer"
    assert spec.describe_parameter("fail") == "str, one of ['no', 'raise', 'module', 'child']"
    cfg = spec.make_config("tiny", depth=3)
    assert (cfg.width, cfg.depth, cfg.batch_size) == (16, 3, 4)
    with pytest.raises(dataclasses_frozen()):
        cfg.width = 8  # type: ignore[misc]
    plan = api.plan_run(
        FIXTURE, params={"width": "16,32", "batch_size": "2"}, preset="tiny", modes="train",
        device="cpu", out=tmp_path / "g.csv",
    )  # fmt: skip
    plan.writer.unlock()
    assert [c.params_dict["width"] for c in plan.configs] == [16, 32]
    assert {c.params_dict["batch_size"] for c in plan.configs} == {2}
    assert plan.configs[0].scenario == FIXTURE and plan.configs[0].key.startswith(FIXTURE + "|train|")


def dataclasses_frozen() -> type[Exception]:
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_list_shows_a_factory_with_its_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    r = invoke("list", FIXTURE)
    assert r.exit_code == 0, r.output
    assert "A small GPT-style decoder" in r.output
    assert "width=32" in r.output and "int, a positive integer" in r.output
    assert "preset tiny: width=16 depth=2" in r.output
    (info,) = json.loads(invoke("list", FIXTURE, "--json").output)
    assert info["parameters"]["depth"] == 2 and info["parameter_types"]["fail"].startswith("str, one of")


# --- bad input: exit 2, naming what is wrong, nothing written ----------------------------------------

BAD_FACTORIES = {
    "syntax.py": "def build(width: int = 8)\n    return None\n",
    "nodefault.py": "def build(width: int, depth: int = 2):\n    pass\n",
    "nohint.py": "def build(width=8):\n    pass\n",
    "badhint.py": "def build(width: list = []):\n    pass\n",
    "baddefault.py": "def build(width: int = 'eight'):\n    pass\n",
    "importerror.py": "raise RuntimeError('boom at import')\n",
    "checks.py": (
        "from typing import Literal\n"
        "from bench.api import scenario\n"
        "@scenario(checks={'dropout': 'probability'})\n"
        "def build(dropout: float = 0.1, act: Literal['gelu', 'relu'] = 'gelu'):\n"
        "    pass\n"
    ),
    "badcheck.py": (
        "from bench.api import scenario\n"
        "@scenario(checks={'dropout': 'small'})\n"
        "def build(dropout: float = 0.1):\n"
        "    pass\n"
    ),
}


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("missing.py:build", "missing.py does not exist"),
        ("syntax.py:build", "syntax error in"),
        ("nodefault.py:build", "parameter 'width' has no default"),
        ("nohint.py:build", "parameter 'width' has no type hint"),
        ("badhint.py:build", "parameter 'width': type"),
        ("baddefault.py:build", "parameter 'width': default 'eight' is not a int"),
        ("importerror.py:build", "raised RuntimeError: boom at import"),
        ("syntax.py:nothing", "syntax error"),
        ("checks.py:build -p dropout=1.5", "dropout: must be a probability in [0, 1), got 1.5"),
        ("checks.py:build -p act=tanh", "act: unknown value 'tanh'; expected one of ['gelu', 'relu']"),
        ("badcheck.py:build", "unknown check(s) {'dropout': 'small'}"),
    ],
)
def test_a_bad_factory_file_exits_2_naming_it(
    name: str, needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for file, text in BAD_FACTORIES.items():
        _write(tmp_path, file, text)
    monkeypatch.chdir(tmp_path)
    r = invoke("run", *name.split(), "--out", str(tmp_path / "x.csv"))
    assert r.exit_code == 2, r.output
    assert needle in r.output and "Traceback" not in r.output
    assert name.split(":")[0] in r.output  # the file is named
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([f"{FIXTURE}x"], "has no attribute 'buildx'; it defines"),
        ([FIXTURE, "-p", "fail=raise"], "factory build(batch_size=4"),
        ([FIXTURE, "-p", "fail=raise"], "raised ValueError: tiny_gpt: failing on purpose"),
        ([FIXTURE, "-p", "fail=module"], "returned TinyGPT, not a bench.api.Workload"),
        ([FIXTURE, "-p", "heads=3"], "width (32) must be divisible by heads (3)"),
        ([FIXTURE, "-p", "width=0"], "width: must be a positive integer"),
        ([FIXTURE, "-p", "fail=maybe"], "fail: unknown value 'maybe'"),
        ([FIXTURE, "-p", "colour=red"], "no parameter 'colour'"),
        ([FIXTURE, "-p", "checkpoint_blocks=GPT2Block"], "no submodule of class 'GPT2Block'"),
        (["tests/fixtures/tiny_gpt.py:DecoderBlock"], "is a class, not a factory function"),
        (["no_such_pkg_xyz.models:build"], "no module named 'no_such_pkg_xyz'"),
        (["tests/fixtures/tiny_gpt.py:F"], "is module, not a factory function"),
        (["timm:resnet1"], "timm has no model 'resnet1'"),
        (["timm:resnet1"], "Did you mean 'resnet18'"),
        (["hf:gtp2"], "transformers has no model type 'gtp2'"),
        (["hf:gtp2"], "Did you mean 'gpt2'"),
        (["hf:gpt2", "-p", "n_embd=66"], "divisible"),
        (["hf:gpt2", "-p", "seq_len=4096"], "longer than hf:gpt2's max_position_embeddings (1024)"),
        (["hf:gpt2", "-p", "n_layer=2", "-p", "num_hidden_layers=3"], "given twice"),
        (["encodr"], "Did you mean 'encoder'"),
    ],
)
def test_bad_input_exits_2_naming_it(
    args: list[str], needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    r = invoke("run", *args, "--mode", "train", "--device", "cpu", "--out", str(tmp_path / "x.csv"))
    assert r.exit_code == 2, r.output
    assert needle in " ".join(r.output.split()), r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "x.csv").exists()


def test_a_missing_extra_exits_2_naming_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from bench.foreign import resolve

    monkeypatch.setattr(resolve, "_CACHE", {})
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    monkeypatch.setitem(sys.modules, "transformers", None)
    for name, extra in (("timm:resnet18", "dlbench[timm]"), ("hf:gpt2", "dlbench[hf]")):
        r = invoke("run", name, "--out", str(tmp_path / "x.csv"))
        assert r.exit_code == 2 and extra in r.output, r.output


def test_a_factory_that_fails_in_the_child_is_an_error_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    plan = api.plan_run(
        FIXTURE,
        params={"fail": "child"},
        preset="tiny",
        modes="train",
        device="cpu",
        out=tmp_path / "c.csv",
        isolation=False,
    )  # the check up front builds it (outside a child) and passes
    monkeypatch.setenv(CHILD_ENV_VAR, "1")  # in-process run, as inside a child process
    summary = api.execute_plan(plan, progress=False)
    (row,) = summary.rows
    assert row["status"] == "error" and "failing on purpose (fail=child)" in row["reason"]
    assert summary.exit_code == 1


# --- blocks ---------------------------------------------------------------------------------------------


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_blocks_are_the_largest_same_type_container() -> None:
    small = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])  # two same-type children, fewer
    model = nn.ModuleDict(
        {
            "head": nn.Sequential(nn.Linear(4, 4), nn.ReLU()),  # mixed: not blocks
            "acts": nn.Sequential(nn.ReLU(), nn.ReLU(), nn.ReLU(), nn.ReLU()),  # no parameters
            "small": small,
            "stack": nn.Sequential(_Block(), _Block(), _Block()),
        }
    )
    assert detect_blocks(model) == (_Block,)
    assert block_paths(model, (_Block,)) == ["stack.0", "stack.1", "stack.2"]
    assert block_paths(model, (nn.Linear,))[:2] == ["head.0", "small.0"]  # outermost only: not stack.0.fc
    assert detect_blocks(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))) == ()
    assert blocks_by_name(model, "_Block+Linear") == (_Block, nn.Linear)
    with pytest.raises(ValueError, match="no submodule of class 'Conv2d'; its classes with parameters are"):
        blocks_by_name(model, "Conv2d")


@pytest.mark.parametrize("model_type", ["gpt2", "bert", "llama"])
def test_detected_blocks_agree_with_hugging_face_no_split_modules(model_type: str) -> None:
    spec = get_scenario(f"hf:{model_type}")
    w = spec.build(spec.make_config("tiny"), BuildContext(device="meta", mode="forward"))
    assert w.extra["blocks_from"] == "_no_split_modules"
    assert detect_blocks(w.model) == w.blocks
    assert {"gpt2": "GPT2Block", "bert": "BertLayer", "llama": "LlamaDecoderLayer"}[model_type] == w.extra[
        "blocks"
    ]


def test_checkpointing_a_model_without_blocks_is_a_skipped_row(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "mlp.py",
        """
        import torch
        from torch import nn
        from bench.api import Workload

        def build(batch_size: int = 2, width: int = 8) -> Workload:
            model = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1))
            return Workload(model=model, inputs=(torch.randn(batch_size, width),))
        """,
    )
    s = api.run(f"{path}:build", modes="train", checkpointing="none,full", out=tmp_path / "m.csv", **FAST)
    ok, skipped = s.rows
    assert ok["status"] == "ok" and ok["items_per_step"] == 2  # the batch's leading dimension
    assert ok["extra"]["blocks_from"] == "none"
    assert skipped["status"] == "skipped" and "has no repeated blocks to checkpoint" in skipped["reason"]
    assert "checkpoint_blocks" in skipped["reason"] and s.exit_code == 0
    # naming the blocks makes it run: -p checkpoint_blocks=Linear
    s = api.run(
        f"{path}:build", modes="train", checkpointing="full", params={"checkpoint_blocks": "Linear"},
        out=tmp_path / "n.csv", **FAST,
    )  # fmt: skip
    (row,) = s.rows
    assert row["status"] == "ok" and row["extra"]["blocks_from"] == "checkpoint_blocks"


def test_a_factory_without_an_optimizer_trains_with_adamw_warmup() -> None:
    from dlcore import AdamWWithWarmup

    spec = get_scenario(FIXTURE_ABS)
    w, step = build_step(
        spec, spec.make_config("tiny"), BuildContext(device="cpu", mode="train"), precision="fp32",
        checkpointing="full",
    )  # fmt: skip
    assert isinstance(w.optimizer, AdamWWithWarmup)
    assert w.blocks == (type(w.model.blocks[0]),) and w.extra["blocks"] == "DecoderBlock"
    before = [p.detach().clone() for p in w.model.parameters()]
    step.run()
    assert all(not torch.equal(a, b) for a, b in zip(before, w.model.parameters(), strict=True))


# --- entry points: a fixture distribution on the path ---------------------------------------------------


def test_an_installed_entry_point_is_listed_and_runs(tmp_path: Path) -> None:
    site = tmp_path / "site"
    pkg = site / "dlbench_ep_fixture"
    pkg.mkdir(parents=True)
    _write(
        pkg,
        "__init__.py",
        """
        import torch
        from torch import nn
        from bench.api import Workload, scenario

        @scenario(presets={"tiny": {"width": 4}}, description="entry-point fixture model")
        def build(batch_size: int = 2, width: int = 8) -> Workload:
            layers = nn.Sequential(*(nn.Linear(width, width) for _ in range(2)))
            return Workload(model=layers, inputs=(torch.randn(batch_size, width),))
        """,
    )
    info = site / "dlbench_ep_fixture-0.1.dist-info"
    info.mkdir()
    _write(info, "METADATA", "Metadata-Version: 2.1\nName: dlbench-ep-fixture\nVersion: 0.1\n")
    _write(
        info,
        "entry_points.txt",
        "[dlbench.scenarios]\nepmodel = dlbench_ep_fixture:build\nbroken = dlbench_ep_fixture:nothing\n",
    )
    _write(info, "RECORD", "")
    probe = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from bench.cli import app\n"
        "r = CliRunner().invoke(app, ['list'])\n"
        "print(r.output)\n"
        "print('EXIT', r.exit_code)\n"
        "print('HEAVY', sorted({m.split('.')[0] for m in sys.modules} & {'timm', 'transformers'}))\n"
        "import bench.api as api\n"
        "s = api.run('epmodel', preset='tiny', modes='train', checkpointing='full', device='cpu',"
        f" isolation=False, max_time_s=0.05, progress=False, out={str(tmp_path / 'e.csv')!r})\n"
        "print('ROW', s.rows[0]['status'], s.rows[0]['scenario'], s.rows[0]['param_width'])\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "EXIT 0" in text and "epmodel  entry-point fixture model" in text, text
    assert "preset tiny: width=4" in text
    assert "broken  could not load: scenario 'broken': loading its entry point" in text  # listed, not fatal
    assert "HEAVY []" in text  # listing an entry point imports neither timm nor transformers
    assert "ROW ok epmodel 4" in text
