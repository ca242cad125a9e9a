"""Test-side names for the CA helpers (IOCs as subprocesses on private ports)."""

from ioc.tools._caenv import (
    CAEnvironment,
    Client,
    IOCProcess,
    free_port,
    tree_fds,
    tree_memory,
    wait_for,
    wait_until_quiet,
)

__all__ = ["CAEnvironment", "Client", "IOCProcess", "free_port", "pyepics", "tree_fds", "tree_memory",
           "wait_for", "wait_until_quiet"]


def pyepics(script: str, timeout: float = 120.0):
    """Run ``script`` with pyepics (``import epics`` done) in a new Python process and
    return the JSON value it assigns to ``result``.  A new process has a new libca
    context: this process's libca may still hold channels of an earlier module's IOCs
    (same names, same ports) and searches for them again only after its back-off, which
    grows to minutes."""
    import json
    import os
    import subprocess
    import sys
    import textwrap

    code = ("import json\nimport epics\n" + textwrap.dedent(script)
            + "\nprint('RESULT ' + json.dumps(result), flush=True)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, (done.stdout[-2000:], done.stderr[-2000:])
    return json.loads(lines[-1][len("RESULT "):])
