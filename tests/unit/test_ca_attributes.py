"""CA attributes: per-frame PARAMs from the frame, ADCore's merge order, NDArrayPort names."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from helpers import make_frame

from ioc.layout.ndattributes import load_attributes
from ioc.ndarray import NDAttribute, NDAttrSource, NDAttrType
from ioc.sources.ca import AttributeSampler, add_attributes
from ioc.sources.ports import PortMap, parse_port

DRIVER = """<Attributes>
  <Attribute name="Counter" type="PARAM" source="ARRAY_COUNTER" datatype="INT"/>
  <Attribute name="Id" type="PARAM" source="UNIQUE_ID" datatype="INT"/>
  <Attribute name="Stamp" type="PARAM" source="TIME_STAMP" datatype="DOUBLE"/>
  <Attribute name="SizeX" type="PARAM" source="ARRAY_SIZE_X" datatype="INT"/>
  <Attribute name="SizeY" type="PARAM" source="ARRAY_SIZE_Y" datatype="INT"/>
  <Attribute name="Type" type="PARAM" source="DATA_TYPE" datatype="INT"/>
  <Attribute name="Shared" type="CONST" source="from the driver"/>
  <Attribute name="Model" type="PARAM" source="MODEL" datatype="STRING"/>
</Attributes>"""
PLUGIN = """<Attributes>
  <Attribute name="Shared" type="CONST" source="from the plugin"/>
  <Attribute name="Id2" type="PARAM" source="UNIQUE_ID" datatype="DOUBLE"/>
</Attributes>"""


def sampler(xml: str) -> tuple[AttributeSampler, list[str]]:
    s = AttributeSampler(context=None, cam_prefix="")  # no PVs: nothing to connect to
    return s, s.set_definitions(load_attributes(xml))


def test_frame_params_come_from_the_frame():
    s, notes = sampler(DRIVER)
    frame = make_frame(41, shape=(30, 40))  # numpy (Y, X)
    values = s.sample(frame)
    assert values["Counter"].value == 41 and values["Counter"].dtype is NDAttrType.Int32
    assert values["Id"].value == 41
    assert values["Stamp"].value == frame.timestamp and values["Stamp"].dtype is NDAttrType.Float64
    assert (values["SizeX"].value, values["SizeY"].value) == (40, 30)
    assert values["Type"].value == 3  # UInt16
    assert values["Counter"].source_type is NDAttrSource.PARAM
    # a driver PARAM without a frame-borne value needs --cam; said, stored undefined
    assert not values["Model"].defined and any("Model" in n for n in notes)
    assert [n for n in notes if "Counter" in n or "Stamp" in n] == []


def test_rgb1_sizes():
    s, _ = sampler(DRIVER)
    frame = make_frame(1, shape=(30, 40, 3))
    frame.attributes["ColorMode"] = NDAttribute("ColorMode", 2, NDAttrType.Int32)
    values = s.sample(frame)
    assert (values["SizeX"].value, values["SizeY"].value) == (40, 30)


def test_merge_order_driver_then_plugin():
    driver, _ = sampler(DRIVER)
    plugin, _ = sampler(PLUGIN)
    frame = make_frame(7)
    add_attributes(frame, driver, plugin)
    assert frame.attributes["Shared"].value == "from the plugin"  # the later one wins
    assert frame.attributes["Counter"].value == 7 and frame.attributes["Id2"].value == 7.0


def test_without_a_frame_frame_params_are_undefined():
    s, _ = sampler(DRIVER)
    assert not s.sample()["Counter"].defined


def test_port_map():
    ports = PortMap("P:image1:", {"PROC1": "P:image2:", "PVA": "pva://P:Pva1:Image"})
    assert ports.source_of("SIM1") is None  # not known until the driver answers
    ports.driver_port = "SIM1"
    assert ports.source_of("SIM1") == "P:image1:"
    assert ports.source_of("PROC1") == "P:image2:"
    assert ports.name_of("P:image2:") == "PROC1" and ports.name_of("P:image1:") == "SIM1"
    assert ports.name_of("OTHER:image1:") == ""
    assert ports.source_of("ROI1") is None
    refusal = ports.refusal("ROI1")
    assert "ROI1" in refusal and "SIM1, PROC1, PVA" in refusal and len(refusal) < 256


@pytest.mark.parametrize("spec", ["PROC1", "=P:image2:", "PROC1=", "X" * 40 + "=P:"])
def test_port_option_refuses(spec):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_port(spec)


def test_port_option():
    assert parse_port(" PROC1 = P:image2: ") == ("PROC1", "P:image2:")
    assert np.dtype("u2")  # numpy imported for helpers' frames
