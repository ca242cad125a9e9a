"""Stage 3: the NDFileHDF5 plugin: PV table, caproto PVGroup, NDPluginFile state machine,
file naming.  File I/O runs in the file saver's thread, never in caproto's hooks."""
