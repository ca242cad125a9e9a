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

__all__ = ["CAEnvironment", "Client", "IOCProcess", "free_port", "tree_fds", "tree_memory",
           "wait_for", "wait_until_quiet"]
