"""The CLI's reporting commands."""

from __future__ import annotations

import json

from .conftest import assert_user_error, run_cli, run_cli_process


def test_zoo_list_json_has_papers_numbers():
    proc = run_cli("zoo", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert len(rows) == 14
    assert rows["mobilevig_ti"]["paper"]["top1"] == 75.7


def test_zoo_list_table_with_counts():
    proc = run_cli("zoo", "list", "--count")
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if "mobilevig_ti" in ln)
    assert "5.2M" in line and "5.27M" in line and "0.66" in line


def test_zoo_info_counts_beside_paper():
    proc = run_cli("zoo", "info", "mobileone_s0", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert abs(info["params_m"] - 2.08) < 0.01 and info["paper"]["params_m"] == 2.1
    text = run_cli("zoo", "info", "mobilevig_ti").stdout
    assert "5.27 M counted by edgekit" in text and "paper 5.2 M" in text


def test_zoo_info_unknown():
    # the one CLI test that runs the real process: `python -m edgekit.cli`, its exit code and stderr
    assert_user_error(run_cli_process("zoo", "info", "resnet50"), "unknown model 'resnet50'")
