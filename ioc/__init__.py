"""nexus-writer-ioc: an NDFileHDF5-compatible NeXus file writer IOC.

The data path, one subpackage per stage; a stage imports only from the stages before it:

* ``ioc.ndarray``  the frame model (NDArray, NDAttribute) shared by all stages
* ``ioc.layout``   layout XML and NDAttributes XML -> immutable models (pure, no h5py)
* ``ioc.writer``   layout model + frames -> NeXus HDF5 files            (h5py, no EPICS)
* ``ioc.plugin``   PV table, PVGroup, NDPluginFile state machine, naming (caproto server)
* ``ioc.sources``  frames in: Channel Access image and attribute PVs, receiver process
* ``ioc.tools``    sim, demo, bench, check-layout, screens
* ``ioc.server``   ``serve``: assembles the stages; ``ioc.cli`` the command line
"""

__version__ = "0.1.0"
