"""Help texts: every option described with its default, an example and the EPICS
environment in each command's help; the README's commands table names every option."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from ioc.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _options(parser: argparse.ArgumentParser):
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_option_is_described_with_its_default(name):
    parser = _commands()[name]
    text = " ".join(parser.format_help().split())
    for action in _options(parser):
        assert action.help and len(action.help) > 10, f"{name} {action.dest}: no help"
        default = action.default
        if (action.option_strings and default not in (None, "", [], (), False)
                and not isinstance(action, (argparse._CountAction, argparse._StoreConstAction))):
            shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) \
                else str(default)
            assert f"(default: {shown}" in text, f"{name} {action.dest}: default not shown"


@pytest.mark.parametrize("name", sorted(_commands()))
def test_help_has_an_example_and_the_epics_environment(name):
    epilog = _commands()[name].epilog or ""
    assert re.search(r"^examples?( \(.*\))?:\n  nexus-writer-ioc ", epilog, re.M) or \
        f"nexus-writer-ioc {name}" in epilog, epilog
    assert "EPICS environment" in epilog
    if name in ("serve", "sim"):
        for variable in ("EPICS_CAS_SERVER_PORT", "EPICS_CA_SERVER_PORT",
                         "EPICS_CAS_INTF_ADDR_LIST", "EPICS_CAS_BEACON_ADDR_LIST"):
            assert variable in epilog
    if name == "serve":
        assert "EPICS_CA_ADDR_LIST" in epilog and "EPICS_CA_AUTO_ADDR_LIST" in epilog


@pytest.mark.parametrize("name", sorted(_commands()))
def test_readme_commands_table_names_every_option(name):
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in readme.splitlines()
            if line.startswith(f"| `nexus-writer-ioc {name} ")]
    assert rows, f"README's commands table has no row for {name}"
    rows = [" ".join(rows)]  # serve has two rows (the writer, the workers' coordinator)
    for action in _options(_commands()[name]):
        if not action.option_strings or "--version" in action.option_strings:
            continue
        assert any(re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", rows[0])
                   for option in action.option_strings), \
            f"README's {name} row lacks {' / '.join(action.option_strings)}"
