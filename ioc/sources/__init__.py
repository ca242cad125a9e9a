"""Stage 4: where frames come from: the areaDetector image plugin over Channel Access,
the NDAttribute PVs, and the receiver process that hands frames over in shared memory."""
