"""Record semantics that need no server: the CA server port from the environment, and how
a put to a bo record without state names is decoded."""

from __future__ import annotations

import pytest
from caproto import ChannelType

from ioc.plugin.ca_server import ServerPortError, server_port
from ioc.plugin.records import enum_index


def test_server_port_prefers_epics_cas_server_port():
    assert server_port({}) is None
    assert server_port({"EPICS_CA_SERVER_PORT": "6000"}) == 6000
    assert server_port({"EPICS_CA_SERVER_PORT": "6000", "EPICS_CAS_SERVER_PORT": "7000"}) == 7000
    assert server_port({"EPICS_CA_SERVER_PORT": "6000", "EPICS_CAS_SERVER_PORT": " "}) == 6000
    for bad in ("fifty", "0", "70000", "-1"):
        with pytest.raises(ServerPortError, match="EPICS_CAS_SERVER_PORT"):
            server_port({"EPICS_CAS_SERVER_PORT": bad})


def test_nameless_bo_put_decoding():
    names = ("", "")
    assert enum_index([1], ChannelType.ENUM, names) == 1
    assert enum_index([0], ChannelType.LONG, names) == 0
    assert enum_index([1.0], ChannelType.DOUBLE, names) == 1
    assert enum_index([b"1"], ChannelType.STRING, names) == 1  # caput's "1" as a string
    assert enum_index([b""], ChannelType.STRING, names) == 0  # the (empty) name of state 0
    assert enum_index([1], ChannelType.ENUM, ("Done", "Allocate")) == 1
    assert enum_index([b"Allocate"], ChannelType.STRING, ("Done", "Allocate")) == 1
    with pytest.raises(ValueError, match="out of range"):
        enum_index([2], ChannelType.ENUM, names)
    with pytest.raises(ValueError, match="not a state"):
        enum_index([b"Process"], ChannelType.STRING, names)
