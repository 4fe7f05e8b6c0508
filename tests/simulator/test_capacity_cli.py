"""``tollway capacity`` and ``tollway plan`` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from simulator.capacity_cli import register

WORKLOAD = {
    "seed": 3,
    "duration_s": 30,
    "targets": {"ttft_p99_s": 0.5, "itl_p99_s": 0.05},
    "agents": {
        "helper": {
            "pool": "small",
            "sessions_per_minute": 120,
            "turns": {"dist": "uniform", "low": 1, "high": 3},
            "system_prompt_tokens": 500,
            "first_turn_tokens": 300,
            "turn_input_tokens": {"dist": "exponential", "mean": 200},
            "output_tokens": 60,
            "tool_wait_s": 0.5,
        }
    },
}
POOLS = {
    "prices": {"h100": 2.5, "l4": 0.7},
    "pools": {
        "small": {
            "gpu": "h100",
            "model": {"name": "llama-3.1-8b-instruct"},
            "search": {"gpus": ["l4", "h100"], "max_workers": 2},
        }
    },
}


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test root."""

    register(app)
    return app


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    workload, pools = tmp_path / "workload.yaml", tmp_path / "pools.yaml"
    workload.write_text(yaml.safe_dump(WORKLOAD), encoding="utf-8")
    pools.write_text(yaml.safe_dump(POOLS), encoding="utf-8")
    return workload, pools


def test_capacity_json(app: typer.Typer) -> None:
    args = ["capacity", "--gpu", "h200", "--model", "llama-2-70b", "--weights-dtype", "fp8"]
    result = CliRunner().invoke(app, [*args, "--kv-dtype", "fp8", "--context", "4096", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["kv_pool_tokens"], data["concurrency"], data["headroom_concurrency"]) == (
        407_369,
        99,
        79,
    )


def test_capacity_says_plainly_when_it_does_not_fit(app: typer.Typer) -> None:
    result = CliRunner().invoke(
        app, ["capacity", "--gpu", "h100", "--model", "llama-2-70b", "--weights-dtype", "fp16"]
    )
    assert result.exit_code == 0, result.output
    assert "does not fit at tp=1" in result.output
    assert "smallest TP that fits one 4096-token request: 2" in result.output
    assert "1,342,177,280 bytes = 1.34 GB" in result.output


def test_llama_3_3_70b_fp8_does_not_fit_one_h100(app: typer.Typer) -> None:
    # 67.66 GiB of weights (embedding and head in BF16) against 79.15 x 0.835 = 66.09 GiB
    args = ["capacity", "--gpu", "h100", "--model", "llama-3.3-70b-instruct"]
    result = CliRunner().invoke(app, [*args, "--weights-dtype", "fp8", "--kv-dtype", "fp8"])
    assert result.exit_code == 0, result.output
    assert "72.7 GB in all, 67.66 GiB per GPU" in result.output
    assert "does not fit at tp=1: weights need 67.7 GiB per GPU, more than the 66.1 GiB" in (
        result.output
    )


def test_capacity_table_markdown_json_and_plot(app: typer.Typer, tmp_path: Path) -> None:
    args = ["capacity", "--table", "--model", "llama-2-70b"]
    args += ["--weights-dtype", "fp16", "--weights-dtype", "fp8", "--kv-dtype", "fp16"]
    args += ["--kv-dtype", "fp8", "--context", "4096", "--context", "32768"]
    md = CliRunner().invoke(app, [*args, "--markdown"])
    assert md.exit_code == 0, md.output
    assert md.output.count("\n| ") == 17  # header rule + 16 rows (4 GPUs x 2 x 2)
    rows = json.loads(CliRunner().invoke(app, [*args, "--json"]).output)
    assert {r["gpu"] for r in rows} == {"h100", "h200", "a100", "l4"} and len(rows) == 16
    pytest.importorskip("matplotlib")
    chart = tmp_path / "table.png"
    result = CliRunner().invoke(app, [*args, "--plot", str(chart)])
    assert result.exit_code == 0, result.output
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_capacity_rejects_unknown_model_and_repeats_without_table(app: typer.Typer) -> None:
    bad = CliRunner().invoke(app, ["capacity", "--model", "gpt-17"])
    assert bad.exit_code == 2 and "unknown model" in bad.output
    repeat = CliRunner().invoke(app, ["capacity", "--context", "1", "--context", "2"])
    assert repeat.exit_code == 2 and "--table" in repeat.output


def test_plan_json_parses_and_is_deterministic(app: typer.Typer, files: tuple[Path, Path]) -> None:
    workload, pools = files
    args = ["plan", "--workload", str(workload), "--pools", str(pools), "--json"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    data = json.loads(first.output)
    small = data["pools"]["small"]
    assert small["sessions_completed"] == small["sessions_started"] > 0
    assert small["cache_hit_rate"] > 0 and small["cost_per_session"] > 0
    assert json.loads(CliRunner().invoke(app, args).output) == data
    text = CliRunner().invoke(app, args[:-1])
    assert text.exit_code == 0 and "TTFT p50 / p99" in text.output


def test_plan_plots_latency_against_load(
    app: typer.Typer, files: tuple[Path, Path], tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    workload, pools = files
    args = ["plan", "-w", str(workload), "-p", str(pools), "--json", "--load-scales", "0.5,1"]
    result = CliRunner().invoke(app, [*args, "--plot", str(tmp_path / "charts")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "charts" / "latency-vs-load-small.png").exists()


def test_plan_search_json_and_pools_file(
    app: typer.Typer, files: tuple[Path, Path], tmp_path: Path
) -> None:
    workload, pools = files
    out = tmp_path / "chosen.yaml"
    args = ["plan", "-w", str(workload), "-p", str(pools), "--search", "--json"]
    result = CliRunner().invoke(app, [*args, "--write-pools", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{") :])
    chosen = data["pools"]["small"]["chosen"]
    assert data["feasible"] and chosen["meets_targets"]
    written = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert written["pools"]["small"]["gpu"] == chosen["gpu"]


def test_plan_reports_bad_files_with_the_yaml_path(
    app: typer.Typer, files: tuple[Path, Path]
) -> None:
    workload, pools = files
    broken = dict(WORKLOAD, agents={"helper": {**WORKLOAD["agents"]["helper"], "pool": "big"}})  # type: ignore[dict-item]
    workload.write_text(yaml.safe_dump(broken), encoding="utf-8")
    result = CliRunner().invoke(app, ["plan", "-w", str(workload), "-p", str(pools)])
    assert result.exit_code == 2
    assert "agents.helper.pool" in result.output and "'big' is not defined" in result.output
    pools.write_text("pools: {small: {gpu: h100, model: {name: llama-3.1-8b-instruct}, x: 1}}")
    result = CliRunner().invoke(app, ["plan", "-w", str(workload), "-p", str(pools)])
    assert result.exit_code == 2 and "pools.small.x: unknown key" in result.output
