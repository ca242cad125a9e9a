"""The README's operator block, pasted: run as written with EPICS base's caput/caget
against ``sim`` + ``serve``; the file lands where the block says, with the frames.

Substituted, as the README documents: the ports 5064/5074 (free private ones; the
repeater and beacon port from the environment) and /tmp/nexus-data (a temporary
directory).  Nothing else."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from epics_base import require_epics_base
from ioc_harness import CAEnvironment

from ioc.tools.sim import expected_pixels

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- operator-recipe:start -->", "<!-- operator-recipe:end -->"
DATA_ROOT = "/tmp/nexus-data"
EXPECT = "# -> "
# The README's way to run the block with caproto's tools instead of EPICS base's.
CAPROTO_TOOLS = 'caput() { caproto-put "$@"; }; caget() { caproto-get "$@"; }'


def operator_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(START) + len(START):text.index(END)]
    match = re.fullmatch(r"\s*```sh\n(.*)```\s*", section, re.S)
    assert match, "the operator block is one ```sh fenced block between the markers"
    return match.group(1)


def expected_lines(block: str) -> list[str]:
    return [line[len(EXPECT):] for line in block.splitlines() if line.startswith(EXPECT)]


def _words(text: str) -> str:
    """Whitespace-insensitive; caproto-get prints values in brackets."""
    return " ".join(text.replace("[", " ").replace("]", " ").split())


def _alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_group(group: int, wait: float) -> None:
    """The IOCs the block started: step 7 stops them (let them finish closing: a second
    SIGTERM would interrupt their shutdown); if the block stopped earlier, stop them."""
    deadline = time.monotonic() + wait
    while _alive(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _alive(group):
            return
        os.killpg(group, sig)
        deadline = time.monotonic() + 15
        while _alive(group) and time.monotonic() < deadline:
            time.sleep(0.1)


def test_block_is_what_operators_need():
    block = operator_block()
    for needed in ("nexus-writer-ioc sim", "nexus-writer-ioc serve", "--cam 13SIM1:cam1:",
                   "caput -c -S 13SIM1:HDF1:FilePath", "caget -S 13SIM1:HDF1:FullFileName_RBV",
                   "EPICS_CA_ADDR_LIST="):
        assert needed in block
    # every long-string (CHAR waveform) put and read uses -S
    from ioc.plugin.pvtable import BY_SUFFIX, Kind

    for line in block.splitlines():
        words = line.split()
        if words[:1] in (["caput"], ["caget"]):
            for name in (w for w in words if w.startswith("13SIM1:HDF1:")):
                if BY_SUFFIX[name.removeprefix("13SIM1:HDF1:")].kind is Kind.CHAR:
                    assert "-S" in words, line


@pytest.mark.parametrize("tools", ["epics-base", "caproto"])
def test_readme_operator_block(tmp_path, tools):
    if tools == "epics-base":
        bin_dir, prelude = require_epics_base(), ""
    else:
        bin_dir, prelude = Path(sys.executable).parent, CAPROTO_TOOLS + "\n"
        assert f"`{CAPROTO_TOOLS}`" in (ROOT / "README.md").read_text()
    block = operator_block()
    env_ca = CAEnvironment(2)
    data = tmp_path / "nexus-data"
    writer_port, detector_port = env_ca.ports
    script = prelude + (block.replace("5064", str(writer_port)).replace("5074", str(detector_port))
              .replace(DATA_ROOT, str(data)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPICS_")}
    env.update(EPICS_CA_REPEATER_PORT=str(env_ca.repeater),
               EPICS_CAS_BEACON_PORT=str(env_ca.repeater),
               PATH=os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent),
                                     env.get("PATH", "")]))
    proc = subprocess.Popen(["bash", "-e", "-c", script], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output = proc.communicate(timeout=240)[0]
    finally:
        _stop_group(proc.pid, wait=20 if proc.returncode == 0 else 0)
        env_ca.close()
    serve_log = (data / "serve.log").read_text() if (data / "serve.log").exists() else ""
    print(serve_log)
    assert proc.returncode == 0, output + "\n--- serve.log\n" + serve_log
    assert "CA.Client.Exception" not in output, output
    # the block's "# -> " lines are what the commands printed, in order
    shown, position = _words(output), 0
    for line in expected_lines(script):
        found = shown.find(_words(line), position)
        assert found >= 0, f"{line!r} not printed (after position {position}):\n{output}"
        position = found + len(_words(line))
    # the files are where the block says, with the frames the simulator sent
    directory = data / "2026-11"
    files = sorted(p.name for p in directory.glob("*.h5"))
    assert files == ["mrinal_001.h5", "mrinal_002.h5", "mrinal_003.h5"]
    for name in files:
        with h5py.File(directory / name, "r") as f:
            uid = int(f["/entry/instrument/NDAttributes/NDArrayUniqueId"][0])
            frames = f["/entry/data/data"][()]
            assert np.array_equal(frames.reshape(256, 256), expected_pixels(uid, 256, 256))
            # PARAM attributes come from --cam: the driver's model, not NaN
            assert f["/entry/instrument/detector/description"][0] == b"Basic simulator"
    assert "ERROR" not in serve_log and "Traceback" not in serve_log, serve_log
