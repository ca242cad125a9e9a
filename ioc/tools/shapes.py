"""``check-layout --frame X Y [--extra-dims ...]``: the dataset shapes a set of PV values gives.

A dry run of the writer's geometry (``ioc.writer.extra_dims``): the detector dataset at open,
when NumCapture frames are in, its maxshape and chunks, and the NDAttribute datasets
(1-D, or shaped like the scan with DimAttDatasets), without writing a file.
"""

from __future__ import annotations

import argparse

from ..layout.model import Layout
from ..writer.extra_dims import ATTRIBUTE_TAIL, DIM_NAMES, MAX_EXTRA_DIMS, ExtraDims, Placer

__all__ = ["add_arguments", "report"]

MODES = ("single", "capture", "stream")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "dry run of the shapes (given --frame)",
        "e.g. --frame 64 48 --extra-dims 3 4 2 --dim-att-datasets: a 3 x 4 scan, 2 frames "
        "per point, of 64 x 48 images")
    group.add_argument("--frame", type=int, nargs="+", metavar="SIZE",
                       help="NDArray dimensions, fastest first (SizeX SizeY, or 3 X Y for RGB1)")
    group.add_argument("--mode", choices=MODES, default="stream", help="FileWriteMode")
    group.add_argument("--extra-dims", type=int, nargs="+", metavar="SIZE", default=(),
                       help="ExtraDimSize of each extra dimension in the dataset's order, "
                       "outermost first, ending with N (frames per point): NumExtraDims is "
                       "their count - 1")
    group.add_argument("--extra-dim-chunks", type=int, nargs="+", metavar="CHUNK", default=(),
                       help="ExtraDimChunk of the extra dimensions before N, same order "
                       "(the N axis is chunked by --frames-chunks)")
    group.add_argument("--num-capture", type=int, help="NumCapture (default: the product of "
                       "the extra dimensions, else 1)")
    group.add_argument("--frames-chunks", type=int, default=1, help="NumFramesChunks")
    group.add_argument("--dim-att-datasets", action="store_true", help="DimAttDatasets=Yes")
    group.add_argument("--position-mode", action="store_true", help="PositionMode=On")


def _extra_dims(args: argparse.Namespace) -> ExtraDims:
    sizes = list(reversed(args.extra_dims)) or [1]
    if len(sizes) - 1 > MAX_EXTRA_DIMS:
        raise ValueError(f"at most {MAX_EXTRA_DIMS + 1} extra dimensions")
    if any(s <= 0 for s in sizes):
        raise ValueError("extra dimension sizes must be greater than 0 (ADCore refuses 0)")
    chunks = [0, *reversed(args.extra_dim_chunks)]  # ExtraDimChunkN has no PV
    multi = args.mode != "single"
    return ExtraDims(
        num_extra_dims=len(sizes) - 1 if multi else 0,
        sizes=tuple(sizes) + (1,) * (len(DIM_NAMES) - len(sizes)),
        chunks=tuple(chunks) + (0,) * (len(DIM_NAMES) - len(chunks)),
        position_mode=args.position_mode and multi,
        pos_names=tuple(f"d{len(sizes) - 1 - d}" if d < len(sizes) else ""
                        for d in range(len(DIM_NAMES))),
        dim_att_datasets=args.dim_att_datasets)


def _shape(values) -> str:
    return "(" + ", ".join("None" if v is None else str(v) for v in values) + \
        ("," if len(values) == 1 else "") + ")"


def report(args: argparse.Namespace, layout: Layout) -> str:
    from ..writer.nexus import WriterOptions, effective_chunks  # h5py: only for a dry run

    dims = _extra_dims(args)
    multi = args.mode != "single"
    num_capture = args.num_capture
    if num_capture is None:
        num_capture = dims.num_capture() if dims.num_extra_dims else 1
    frame = tuple(reversed(args.frame))  # HDF5 order: slowest first
    frame_chunks = tuple(reversed(effective_chunks(tuple(args.frame), WriterOptions())))
    lines = [f"Shapes (dry run): FileWriteMode {args.mode.capitalize()}, "
             f"NumExtraDims {dims.num_extra_dims}, "
             + ", ".join(f"ExtraDimSize{DIM_NAMES[d]} {dims.sizes[d]}"
                         for d in range(dims.num_extra_dims + 1))
             + f", NumCapture {num_capture}, frame {' x '.join(map(str, args.frame))}"]
    if not multi:
        lines.append(f"  detector datasets: {_shape(frame)} (one image per file; "
                     "Single mode forces NumExtraDims to 0)")
        tail = ATTRIBUTE_TAIL if dims.dim_att_datasets else (1,)
        lines.append(f"  NDAttribute datasets: {_shape(tail)}")
        return "\n".join(lines)
    plan = dims.plan(num_capture, args.frames_chunks)
    placer = Placer(plan)
    frames = num_capture if num_capture > 0 else plan.capacity
    if frames is None:
        full = "grows without limit (NumCapture 0)"
    elif dims.position_mode:
        full = _shape(tuple(m for m in plan.position_limits) + frame) + \
            " when every position is labelled"
    else:
        for i in range(frames):
            placer.take(placer.next_sequential(i))
        full = _shape(tuple(placer.extent) + frame) + \
            f" after {frames} frame{'s' if frames != 1 else ''}"
    for dataset in layout.detector_datasets():
        lines.append(f"  {dataset.path}: at open {_shape((1,) * plan.rank + frame)}, {full}; "
                     f"maxshape {_shape(plan.maxshape + frame)}, "
                     f"chunks {_shape(plan.chunks + frame_chunks)}")
    if dims.num_extra_dims:
        order = " -> ".join(f"{DIM_NAMES[d]}" for d in range(dims.num_extra_dims + 1))
        how = ("by the NDAttributes named by PosNameDim" + "/".join(
            DIM_NAMES[d] for d in range(dims.num_extra_dims + 1)) if dims.position_mode
            else f"in arrival order, {order} (N fastest)")
        lines.append(f"  frames are placed {how}")
    if dims.dim_att_datasets:
        chunks = dims.attribute_chunks(num_capture, 0)
        lead = plan.maxshape if frames is not None else (None,) * plan.rank
        lines.append(f"  NDAttribute datasets (DimAttDatasets): up to {_shape(lead + ATTRIBUTE_TAIL)}"
                     f", maxshape {_shape((None,) * plan.rank + ATTRIBUTE_TAIL)}, "
                     f"chunks {_shape(chunks + ATTRIBUTE_TAIL)} (NDAttributeChunk 0)")
    else:
        lines.append(f"  NDAttribute datasets: 1-D, one value per frame (up to {frames or 'any'})")
    if dims.dim_att_datasets and dims.position_mode:
        lines.append("  PosIndexDim<d> NDAttributes: 1-D, one value per position along dim d")
    return "\n".join(lines)
