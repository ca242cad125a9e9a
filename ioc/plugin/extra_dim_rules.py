"""The extra-dimension PVs: ADCore's write rules, and the snapshot a file is opened with.

NumExtraDims, ExtraDimSize*, ExtraDimChunk*, PositionMode, PosNameDim*, PosIndexDim* and
DimAttDatasets (``NDFileHDF5::writeInt32``, ``calcNumFrames``):

* NumExtraDims 0-9, ExtraDimSize* > 0, ExtraDimChunk* >= 0; the three are refused while a
  file is open (the ``locked`` flag of the PV table).
* Setting NumExtraDims > 0, or any ExtraDimSize while NumExtraDims > 0, sets NumCapture to
  the product of the sizes of dims 0..NumExtraDims.
* NumCapture > 0 with NumExtraDims > 0 is capped at that product; NumCapture = 0
  (unlimited) sets NumExtraDims to 0 unless PositionMode is on, and PositionMode = Off with
  NumCapture = 0 does the same (extra dimensions cannot be unlimited).
* A Single-mode file forces NumExtraDims to 0 (the saver does that at open).

Only the readbacks change when ADCore changes a parameter itself (its longout setpoints
have no ``asyn:READBACK``), so NumCapture_RBV / NumExtraDims_RBV show the effective values.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..writer.extra_dims import DIM_NAMES, MAX_EXTRA_DIMS, MAX_FRAMES, ExtraDims, num_capture_for

__all__ = ["ExtraDimRules", "extra_dims_of"]


def extra_dims_of(params: Mapping[str, object], multi_frame: bool) -> ExtraDims:
    """The extra-dimension settings a file is opened with (Single mode: none)."""
    return ExtraDims(
        num_extra_dims=min(max(int(params["NumExtraDims"]), 0), MAX_EXTRA_DIMS)
        if multi_frame else 0,
        sizes=tuple(int(params[f"ExtraDimSize{d}"]) for d in DIM_NAMES),
        chunks=(0,) + tuple(int(params[f"ExtraDimChunk{d}"]) for d in DIM_NAMES[1:]),
        position_mode=bool(params["PositionMode"]) and multi_frame,
        pos_names=tuple(str(params[f"PosNameDim{d}"]) for d in DIM_NAMES),
        pos_index=tuple(str(params[f"PosIndexDim{d}"]) for d in DIM_NAMES),
        dim_att_datasets=bool(params["DimAttDatasets"]),
    )


class ExtraDimRules:
    """Mixin of the PV group (see ``puts.PutRules``): one handler per extra-dimension PV."""

    def _sizes(self, **override) -> tuple[int, ...]:
        return tuple(int(override.get(d, self.params[f"ExtraDimSize{d}"])) for d in DIM_NAMES)

    async def _product(self, count: int, sizes: tuple[int, ...]) -> int:
        """NumCapture for these sizes; refused beyond an Int32 (ADCore's would overflow)."""
        frames = num_capture_for(count, sizes)
        if frames > MAX_FRAMES:
            await self._refuse(f"the extra dimensions would hold {frames} frames (at most "
                               f"{MAX_FRAMES})")
        return frames

    async def _set_num_capture(self, value: int) -> None:
        self.params["NumCapture"] = value
        await self._publish("NumCapture_RBV", value)

    async def _set_num_extra_dims(self, value: int) -> None:
        self.params["NumExtraDims"] = value
        await self._publish("NumExtraDims_RBV", value)

    async def put_NumExtraDims(self, value):
        count = int(value)
        if not 0 <= count <= MAX_EXTRA_DIMS:
            await self._refuse(f"NumExtraDims must be 0-{MAX_EXTRA_DIMS}")
        if count > 0:
            await self._set_num_capture(await self._product(count, self._sizes()))

    async def _put_extra_dim_size(self, dim: str, value) -> None:
        size = int(value)
        if size <= 0:
            await self._refuse(f"ExtraDimSize{dim} must be greater than 0")
        count = int(self.params["NumExtraDims"])
        if count > 0:
            await self._set_num_capture(await self._product(count, self._sizes(**{dim: size})))

    async def _put_extra_dim_chunk(self, dim: str, value) -> None:
        if int(value) < 0:
            await self._refuse(f"ExtraDimChunk{dim} must not be negative")

    async def num_capture_rule(self, value: int) -> int:
        """NumCapture as ADCore takes it when extra dimensions are set (called by
        ``put_NumCapture`` once the value is known to be acceptable)."""
        count = int(self.params["NumExtraDims"])
        if value == 0:
            if not self.params["PositionMode"] and count:
                await self._set_num_extra_dims(0)
            return value
        if count > 0:
            return min(value, await self._product(count, self._sizes()))
        return value

    async def put_PositionMode(self, value):
        on = bool(self._index("PositionMode", value))
        if not on and int(self.params["NumCapture"]) == 0 and int(self.params["NumExtraDims"]):
            await self._set_num_extra_dims(0)


def _add_handlers() -> None:
    """put_ExtraDimSize<d> and put_ExtraDimChunk<d> for every dim (generated: 19 handlers)."""
    for dim in DIM_NAMES:
        async def size(self, value, dim=dim):
            await self._put_extra_dim_size(dim, value)

        size.__name__ = f"put_ExtraDimSize{dim}"
        setattr(ExtraDimRules, size.__name__, size)
    for dim in DIM_NAMES[1:]:
        async def chunk(self, value, dim=dim):
            await self._put_extra_dim_chunk(dim, value)

        chunk.__name__ = f"put_ExtraDimChunk{dim}"
        setattr(ExtraDimRules, chunk.__name__, chunk)


_add_handlers()
