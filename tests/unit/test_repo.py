"""Repository hygiene that CI depends on."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return [line.strip() for line in lines[:20] if line.strip().startswith("python3 -m venv")]


def test_ci_runs_the_readme_test_command():
    commands = _readme_commands()
    assert len(commands) == 2, "README opens with the demo command and the test command"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in [line.strip() for line in ci]


def test_readme_main_job_is_the_demo():
    assert _readme_commands()[0].endswith("nexus-writer-ioc demo")
