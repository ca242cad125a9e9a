"""Tools around the IOC: the detector simulator, demo, bench, check-layout, screens and
the private loopback EPICS network used by demo, bench and the tests."""
