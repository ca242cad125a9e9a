"""check-layout: the tree and warnings, through the real console script."""

from __future__ import annotations

import subprocess
import sys

from helpers import DATA


def run(*args):
    return subprocess.run([sys.executable, "-m", "ioc.cli", "check-layout", *args],
                          capture_output=True, text=True, timeout=60)


def test_manual_example_prints_tree_and_exits_0():
    result = run(str(DATA / "layout.xml"), "--attributes", str(DATA / "attributes.xml"),
                 "--macros", "P=prj:")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "/entry/instrument/detector/data  [dataset]  detector frames, per frame " \
           "(default destination)" in out
    assert "/entry/data/data  [hard link]  -> /entry/instrument/detector/data" in out
    assert "/entry/instrument/NDAttributes/AcquireTime  [dataset]  NDAttribute AcquireTime " \
           "(EPICS_PV 13SIM1:cam1:AcquireTime), per frame" in out
    assert "/entry/instrument/detector/NDAttributes/ColorMode  [dataset]" in out
    assert "/entry/instrument/NDAttributes/timestamp  [dataset]  performance" in out
    assert "@NX_class = 'SDS'" in out
    assert "NX_class on a dataset" in out  # validators reject SDS
    assert "performance: group has no NX_class" in out


def test_duplicate_ndattribute_and_dangling_link_warn(tmp_path):
    layout = tmp_path / "bad.xml"
    layout.write_text("""<?xml version="1.0"?>
<hdf5_layout>
  <group name="entry">
    <attribute name="NX_class" source="constant" value="NXentry"/>
    <dataset name="data" source="detector"/>
    <dataset name="model" source="ndattribute" ndattribute="Model"/>
    <dataset name="description" source="ndattribute" ndattribute="Model"/>
    <hardlink name="link" target="/entry/missing"/>
  </group>
</hdf5_layout>""")
    attrs = tmp_path / "a.xml"
    attrs.write_text('<Attributes><Attribute name="Model" type="PARAM" source="MODEL" '
                     'datatype="STRING"/><Attribute name="Extra" source="X:pv"/></Attributes>')
    result = run(str(layout), "--attributes", str(attrs))
    assert result.returncode == 0
    assert "warning: line 6: NDAttribute 'Model' is named by 2 datasets (/entry/description, " \
           "/entry/model); only /entry/description is created" in result.stdout
    assert "warning: line 8: hard link /entry/link -> /entry/missing: the target will not " \
        "exist" in result.stdout
    assert "warning: NDAttribute 'Extra' lands in the file root /" in result.stdout


def test_no_detector_dataset_is_an_error():
    result = run('<?xml version="1.0"?><hdf5_layout><group name="e"/></hdf5_layout>')
    assert result.returncode == 1
    assert "error: No detector datasets found" in result.stdout


def test_malformed_layout_exit_1_with_line():
    result = run('<?xml version="1.0"?>\n<hdf5_layout>\n<group name="e">\n</hdf5_layout>')
    assert result.returncode == 1
    assert "<inline>:4" in result.stderr


def test_default_keyword():
    result = run("default")
    assert result.returncode == 0
    assert "/entry/instrument/performance/timestamp  [dataset]" in result.stdout


ODD = """<?xml version="1.0"?>
<xml>
  <group name="entry">
    <attribute name="NX_class" source="constant" value="NXentry"/>
    <attribute name="version" source="attributes" value="3"/>
    <dataset name="data" source="detector"/>
  </group>
</xml>"""


def test_oddities_are_warnings_with_lines_and_strict_adds_the_schema(tmp_path):
    layout = tmp_path / "odd.xml"
    layout.write_text(ODD)
    attrs = tmp_path / "a.xml"
    attrs.write_text('<Attributes>\n<Attribute name="det-sum" type="PARAM" source="TOTAL" '
                     'datatype="FLOAT"/>\n</Attributes>')
    result = run(str(layout), "--attributes", str(attrs))
    assert result.returncode == 0, result.stderr
    assert "warning: line 2: root element <xml> is not <hdf5_layout>" in result.stdout
    assert 'warning: line 5: attribute /entry@version: source="attributes" is not constant ' \
        "or ndattribute" in result.stdout
    assert "warning: attributes file line 2: attribute 'det-sum': datatype 'FLOAT'" \
        in result.stdout
    assert "/det-sum  [dataset]  NDAttribute det-sum (PARAM TOTAL)" in result.stdout

    strict = run(str(layout), "--strict")
    assert strict.returncode == 1
    assert "error: line 2: element <xml>: No matching global declaration" in strict.stdout
    assert run("default", "--strict").returncode == 0
