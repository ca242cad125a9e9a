"""NDAttribute datasets and HDF5 attributes as ADCore writes them: fixed-length
NUL-terminated strings (``NDFileHDF5AttributeDataset``), typed and described datasets that
grow with the frames, values kept and written in batches.  h5py only, no EPICS."""

from __future__ import annotations

import h5py
import numpy as np

from ..layout.model import Attribute, Dataset, Placement, parse_constant
from ..ndarray import ATTRIBUTE_STRING_SIZE, NDAttribute, NDAttrType

__all__ = [
    "AttributeDataset", "attribute_array", "create_attribute_dataset", "set_string_attribute",
    "set_value_attribute",
]


# -- low-level helpers: fixed-length NUL-terminated strings, as ADCore writes them --

def _c_string_type(size: int) -> h5py.h5t.TypeStringID:
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(max(size, 1))
    tid.set_strpad(h5py.h5t.STR_NULLTERM)
    return tid


def _encode(text: str) -> bytes:
    return text.encode("utf-8", errors="replace")


def set_string_attribute(obj: h5py.HLObject, name: str, text: str) -> None:
    """Scalar fixed-length string holding the text and its NUL: STRSIZE = length + 1,
    NULLTERM, as ADCore >= R3-11 writes them."""
    data = _encode(text)
    if name in obj.attrs:
        del obj.attrs[name]
    tid = _c_string_type(len(data) + 1)
    attr = h5py.h5a.create(obj.id, _encode(name), tid, h5py.h5s.create(h5py.h5s.SCALAR))
    # Memory type = file type: HDF5 copies the bytes (text + NUL) unconverted.
    attr.write(np.array(data, dtype=f"S{len(data) + 1}"), mtype=tid)


def set_value_attribute(obj: h5py.HLObject, name: str, value) -> None:
    if isinstance(value, str):
        set_string_attribute(obj, name, value)
        return
    if name in obj.attrs:
        del obj.attrs[name]
    obj.attrs.create(name, value)


def _constant_value(item: Attribute | Dataset):
    value = parse_constant(item.value, item.type)
    if item.type == "int":
        return np.asarray(value, dtype="<i4")
    if item.type == "float":
        return np.asarray(value, dtype="<f8")
    return value


def _ndattr_value(attribute: NDAttribute):
    """Native numpy scalar of an NDAttribute (strings stay str)."""
    if attribute.dtype is NDAttrType.String:
        return str(attribute.value)
    return np.asarray(attribute.value).astype(attribute.dtype.numpy)[()]


def _join(group: str, name: str) -> str:
    return f"/{name}" if group == "/" else f"{group}/{name}"


# -- NDAttribute datasets ----------------------------------------------------

def create_attribute_dataset(group: h5py.Group, placement: Placement, attribute: NDAttribute,
                             shape: tuple[int, ...], maxshape: tuple, chunks: tuple[int, ...],
                             ) -> h5py.Dataset:
    """The dataset of one NDAttribute, typed and described as ADCore's
    NDFileHDF5AttributeDataset makes it (NDAttrName, NDAttrDescription, NDAttrSourceType,
    NDAttrSource); an undefined type gives ADCore's float32 of NaN, never written."""
    if attribute.dtype is NDAttrType.Undefined:
        ds = group.create_dataset(placement.name, shape=shape, maxshape=maxshape,
                                  chunks=chunks, dtype="<f4", fillvalue=np.nan)
    elif attribute.dtype is NDAttrType.String:
        space = h5py.h5s.create_simple(shape, tuple(h5py.h5s.UNLIMITED if m is None else m
                                                    for m in maxshape))
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_chunk(chunks)
        ds = h5py.Dataset(h5py.h5d.create(group.id, _encode(placement.name),
                                          _c_string_type(ATTRIBUTE_STRING_SIZE), space,
                                          dcpl=dcpl))
    else:
        ds = group.create_dataset(placement.name, shape=shape, maxshape=maxshape,
                                  chunks=chunks, dtype=attribute.dtype.numpy)
    for key, text in (("NDAttrName", attribute.name),
                      ("NDAttrDescription", attribute.description),
                      ("NDAttrSourceType", attribute.source_type.value),
                      ("NDAttrSource", attribute.source)):
        if text:
            set_string_attribute(ds, key, text)
    return ds


def attribute_array(dtype: NDAttrType, attribute: NDAttribute) -> np.ndarray | None:
    """A frame's NDAttribute value as an element of its dataset (``dtype``: the type at
    open); None when there is nothing to write (undefined, or a value of another type)."""
    if dtype is NDAttrType.Undefined or not attribute.defined:
        return None
    if dtype is NDAttrType.String:
        return np.array(_encode(str(attribute.value))[: ATTRIBUTE_STRING_SIZE - 1],
                        dtype=f"S{ATTRIBUTE_STRING_SIZE}")
    try:
        return np.asarray(attribute.value).astype(dtype.numpy)
    except (TypeError, ValueError):
        return None  # a value of another type than at open: skipped for this frame


_PLAIN_NUMBERS = (int, float, bool)
_INT64_LIMIT = 2**63  # plain ints beyond do not make one numpy array with the others


class AttributeDataset:
    """One growing 1-D dataset fed by an NDAttribute (NDFileHDF5AttributeDataset)."""

    BATCH = 64

    def __init__(self, group: h5py.Group, placement: Placement, attribute: NDAttribute,
                 chunk: int):
        self.name = attribute.name
        self.path = placement.path
        self.when = placement.when
        self.dtype = attribute.dtype
        self._numeric = attribute.dtype not in (NDAttrType.String, NDAttrType.Undefined)
        self._converted = False
        self.written = 0
        self._pending: list[np.ndarray] = []
        # ADCore's undefined attribute is one NaN; the others grow from empty
        length = 1 if attribute.dtype is NDAttrType.Undefined else 0
        self.ds = create_attribute_dataset(group, placement, attribute, (length,), (None,),
                                           (chunk,))
        self.layout_attributes = placement.dataset.attributes if placement.dataset else ()

    @property
    def takes_plain_numbers(self) -> bool:
        return self._numeric

    def append_plain(self, value: int | float) -> None:
        """A plain number's value (a built-in NDAttribute's, read from the frame), converted
        with the batch at flush."""
        if -_INT64_LIMIT <= value < _INT64_LIMIT:
            self._pending.append(value)
        else:
            try:
                self._pending.append(np.asarray(value).astype(self.dtype.numpy))
            except (TypeError, ValueError, OverflowError):
                return  # as ``attribute_array``: not a value of this dataset, skipped
            self._converted = True
        if len(self._pending) >= self.BATCH:
            self.flush()

    def append(self, attribute: NDAttribute, offsets=None) -> None:
        value = attribute.value
        if self._numeric and type(value) in _PLAIN_NUMBERS and attribute.defined and \
                -_INT64_LIMIT <= value < _INT64_LIMIT:
            pass  # converted with the batch at flush (a numpy scalar each: ~10 us a value)
        else:
            value = attribute_array(self.dtype, attribute)
            if value is None:
                return
            self._converted = True  # not one numpy array with plain numbers (uint64)
        # Kept and written in batches: one resize and one write per BATCH frames instead
        # of per frame (h5py's per-call cost was 15 % of a 1 Mpixel frame's write).
        self._pending.append(value)
        if len(self._pending) >= self.BATCH:
            self.flush()

    @property
    def count(self) -> int:
        return self.written + len(self._pending)

    def truncate(self, count: int) -> None:
        """Keep the first ``count`` values only (frames taken out of the file)."""
        if count >= self.count:
            return
        if count < self.written:
            self.ds.resize((count,))
            self.written = count
            self._pending.clear()
        else:
            del self._pending[count - self.written:]

    def flush(self) -> None:
        """Write the values kept so far (before an HDF5 flush, and at close)."""
        if not self._pending:
            return
        if self._numeric:
            dtype = self.dtype.numpy
            values = np.array([v if isinstance(v, np.ndarray) else np.asarray(v).astype(dtype)
                               for v in self._pending]) if self._converted \
                else np.array(self._pending).astype(dtype)
        else:
            values = np.stack(self._pending)
        self._converted = False
        n = len(values)
        self.ds.resize((self.written + n,))
        self.ds[self.written:self.written + n] = values
        self.written += n
        self._pending.clear()
