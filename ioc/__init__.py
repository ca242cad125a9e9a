"""nexus-writer-ioc: an NDFileHDF5-compatible NeXus file writer IOC.

The data path, one module per stage, each importing only from stages above it:

* ``ioc.ndarray``        the frame model (NDArray, NDAttribute) shared by all stages
* ``ioc.layout``         layout XML -> immutable layout model        (pure, no h5py)
* ``ioc.ndattributes``   NDAttributes XML -> attribute definitions  (pure, no h5py)
* ``ioc.nexus_writer``   layout model + frames -> NeXus HDF5 file   (h5py, no EPICS)
* ``ioc.plugin``         NDFileHDF5 state machine, PV table         (PVs, no h5py)
* ``ioc.sources``        Channel Access image and attribute sources (CA)
"""

__version__ = "0.1.0"
