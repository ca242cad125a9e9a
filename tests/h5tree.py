"""Read an HDF5 file back into plain data so tests can compare files object by object."""

from __future__ import annotations

from dataclasses import dataclass, field

import h5py
import numpy as np


@dataclass
class Obj:
    kind: str  # "group" | "dataset"
    token: object
    shape: tuple | None = None
    maxshape: tuple | None = None
    chunks: tuple | None = None
    dtype: str | None = None
    fillvalue: object = None
    compression: object = None
    value: object = None
    attrs: dict[str, tuple[str, object]] = field(default_factory=dict)


def describe_type(tid: h5py.h5t.TypeID) -> str:
    if isinstance(tid, h5py.h5t.TypeStringID):
        pad = {h5py.h5t.STR_NULLTERM: "nullterm", h5py.h5t.STR_NULLPAD: "nullpad",
               h5py.h5t.STR_SPACEPAD: "spacepad"}[tid.get_strpad()]
        if tid.is_variable_str():
            return "vlen-str"
        return f"S{tid.get_size()}-{pad}"
    return np.dtype(tid.dtype).str


def _attrs(obj) -> dict[str, tuple[str, object]]:
    out = {}
    for name in obj.attrs:
        aid = h5py.h5a.open(obj.id, name.encode())
        value = obj.attrs[name]
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value[()]
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, np.generic):
            value = value.item()
        out[name] = (describe_type(aid.get_type()) + f"{aid.shape}", value)
    return out


def tree(path) -> dict[str, Obj]:
    result: dict[str, Obj] = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            key = "/" + name
            if isinstance(obj, h5py.Group):
                result[key] = Obj("group", h5py.h5o.get_info(obj.id).addr, attrs=_attrs(obj))
            else:
                value = obj[()]
                result[key] = Obj(
                    "dataset", h5py.h5o.get_info(obj.id).addr, shape=obj.shape,
                    maxshape=obj.maxshape, chunks=obj.chunks,
                    dtype=describe_type(obj.id.get_type()), fillvalue=obj.fillvalue,
                    compression=obj.compression, value=value, attrs=_attrs(obj))
        f.visititems_links(lambda name, link: visit(name, f[name]))
        result["/"] = Obj("group", None, attrs=_attrs(f))
    return result
