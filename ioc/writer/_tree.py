"""The tree a layout describes, built at open as ADCore's NDFileHDF5 builds it (reference
§2.4-2.9, §3.2-3.4): groups, detector datasets, constants, the NDAttribute datasets the
first frame's attribute list calls for, the root attributes and hard links.

``TreeBuilding`` is a part of ``NexusWriter`` (``nexus.py``): it uses the writer's ``file``,
``layout``, ``options``, ``warnings`` and the open-time state ``NexusWriter.__init__`` sets
(``_open_attrs``, ``_placement``, ``_compression``, ``_frame_shape``/``_frame_dtype``), and
fills ``_detectors``, ``_direct``, ``_codec_direct``, ``_det_counts``, ``_attr_datasets``,
``_close_attributes`` and ``_perf_location`` for the frames' part (``_frames.py``)."""

from __future__ import annotations

import datetime

import h5py
import numpy as np

from ..layout.model import Attribute, Dataset, Group, Placement, When
from ..ndarray import ATTRIBUTE_STRING_SIZE, NDArray, NDAttribute, NDAttrType
from .attribute_datasets import (
    AttributeDataset,
    _c_string_type,
    _constant_value,
    _encode,
    _join,
    _ndattr_value,
    set_string_attribute,
    set_value_attribute,
)
from .options import attribute_chunk, effective_chunks


class TreeBuilding:
    """The open-time half of ``NexusWriter``: the layout's tree in the new file."""

    # -- open ------------------------------------------------------------------
    def _extend_tree(self) -> None:
        """Subclasses add objects of their own here: the last step of building the tree,
        before SWMR mode (which allows no new objects) starts."""

    def _build_group(self, h5group: h5py.Group, group: Group, first: NDArray) -> None:
        self._apply_attributes(h5group, group.attributes)
        for dataset in group.sorted_datasets():
            if dataset.source == "detector":
                self._create_detector(h5group, dataset, first)
            elif dataset.source == "constant" and not self.layout.is_performance_dataset(dataset):
                self._create_constant(h5group, dataset)
            # ndattribute datasets are made by _create_attribute_datasets, driven by
            # the frame's attribute list, as in ADCore.
        for child in group.sorted_groups():
            self._build_group(h5group.create_group(child.name), child, first)

    def _apply_attributes(self, obj: h5py.HLObject, attributes: tuple[Attribute, ...]) -> None:
        for attribute in attributes:
            if attribute.source == "constant":
                set_value_attribute(obj, attribute.name, _constant_value(attribute))
            elif not self.options.store_attributes:
                continue
            elif attribute.when is When.CLOSE:
                self._close_attributes.append((obj, attribute))
            else:
                self._set_ndattr_attribute(obj, attribute, self._open_attrs)

    def _set_ndattr_attribute(self, obj: h5py.HLObject, attribute: Attribute,
                              values: dict[str, NDAttribute]) -> None:
        source = values.get(attribute.ndattribute)
        if source is None or not source.defined:
            self.warnings.append(f"attribute {obj.name}@{attribute.name}: NDAttribute "
                                 f"{attribute.ndattribute!r} not present")
            return
        set_value_attribute(obj, attribute.name, _ndattr_value(source))

    def _create_detector(self, h5group: h5py.Group, dataset: Dataset, first: NDArray) -> None:
        frame_shape = self._frame_shape
        chunks = tuple(reversed(effective_chunks(first.dims, self.options)))
        if self.options.multi_frame:
            plan = self._placement.plan  # the extra dimensions' leading axes (extra_dims)
            shape = (0,) * plan.rank + frame_shape  # an empty stream holds no frame
            maxshape = (*plan.maxshape, *frame_shape)
            chunks = (*plan.chunks, *chunks)
        else:
            shape = maxshape = frame_shape
        ds = h5group.create_dataset(
            dataset.name, shape=shape, maxshape=maxshape, chunks=chunks,
            dtype=self._frame_dtype, fillvalue=self._fill_value(), **self._compression,
        )
        ndims = first.data.ndim

        def per_dim(values: tuple[int, ...]):
            array = np.asarray(values, dtype="<i4")
            return array[0] if ndims == 1 else array

        ds.attrs.create("NDArrayNumDims", np.int32(ndims))
        ds.attrs.create("NDArrayDimOffset", per_dim(first.dim_offsets()))
        ds.attrs.create("NDArrayDimBinning", per_dim(first.dim_binnings()))
        ds.attrs.create("NDArrayDimReverse", per_dim(first.dim_reverses()))
        self._apply_attributes(ds, dataset.attributes)  # a layout attribute wins
        self._detectors[dataset.path] = ds
        self._det_counts[dataset.path] = 0
        # One uncompressed chunk per frame: the frame's bytes are the chunk, written
        # with H5Dwrite_chunk (as ADCore does when dims and codec match one chunk).
        frame_chunk = (1,) * (len(shape) - len(frame_shape)) + frame_shape
        if not self._compression and chunks == frame_chunk:
            self._direct.add(dataset.path)
        if self._compression and chunks == frame_chunk:
            self._codec_direct.add(dataset.path)  # pre-compressed frames of a matching codec

    def _fill_value(self):
        value = self.options.fill_value
        if self._frame_dtype.kind != "f" and not np.isfinite(value):
            value = 0
        with np.errstate(all="ignore"):
            return np.asarray(value).astype(self._frame_dtype)[()]

    def _create_constant(self, h5group: h5py.Group, dataset: Dataset) -> None:
        value = _constant_value(dataset)
        if isinstance(value, str):
            data = _encode(value)
            tid = _c_string_type(len(data) + 1)
            dsid = h5py.h5d.create(h5group.id, _encode(dataset.name), tid,
                                   h5py.h5s.create_simple((1,)))
            dsid.write(h5py.h5s.ALL, h5py.h5s.ALL, np.array([data], dtype=f"S{len(data) + 1}"))
            ds = h5py.Dataset(dsid)
        else:
            ds = h5group.create_dataset(dataset.name, data=value)
        self._apply_attributes(ds, dataset.attributes)

    def _attribute_chunk(self, attribute: NDAttribute | None = None) -> int:
        """Sized by what the dataset holds (``attribute_chunk``); a performance row (5
        float64) when no attribute is given."""
        if attribute is None:
            itemsize = 40
        elif attribute.dtype is NDAttrType.String:
            itemsize = ATTRIBUTE_STRING_SIZE
        elif attribute.dtype is NDAttrType.Undefined:
            itemsize = 4
        else:
            itemsize = np.dtype(attribute.dtype.numpy).itemsize
        return attribute_chunk(self.options, itemsize)

    def _create_attribute_datasets(self) -> None:
        self._attr_datasets: list[AttributeDataset] = []
        self._perf_location = None
        if self.options.store_performance:
            self._perf_location = self.layout.performance_location()
        if not self.options.store_attributes:
            return
        default = self.layout.ndattr_default_group()
        used_default = False
        for name, attribute in self._open_attrs.items():
            placement = self.layout.place_ndattribute(name)
            if placement is None:
                continue
            group = self.file.require_group(placement.group)
            if placement.name in group:
                self.warnings.append(f"NDAttribute {name!r}: {placement.path} already exists; "
                                     "not stored")
                continue
            if self._perf_location is not None and placement.path == _join(*self._perf_location):
                self.warnings.append(f"NDAttribute {name!r}: {placement.path} is the "
                                     "performance dataset; not stored")
                continue
            holder = self._attribute_holder(group, placement, attribute,
                                            self._attribute_chunk(attribute))
            self._apply_attributes(holder.ds, holder.layout_attributes)
            if placement.when is When.OPEN:
                holder.append(attribute)
            self._attr_datasets.append(holder)
            used_default |= default is not None and placement.group == default.path
        # NDArrayUniqueId last in each write pass: a "row complete" marker for SWMR readers.
        self._attr_datasets.sort(key=lambda h: h.name == "NDArrayUniqueId")
        if default is not None and self.options.hostname:
            set_string_attribute(self.file[default.path], "hostname", self.options.hostname)

    def _attribute_holder(self, group: h5py.Group, placement: Placement, attribute: NDAttribute,
                          chunk: int):
        """A 1-D NDAttribute dataset, or one shaped like the scan (DimAttDatasets, PosIndexDim)."""
        dims = self.options.extra_dims
        if not dims.dim_att_datasets:
            return AttributeDataset(group, placement, attribute, chunk)
        from .scan_attributes import ScanAttributeDataset  # it builds on this module

        multi = self.options.multi_frame
        index_dim = dims.index_dim(attribute.name) if multi else None
        if index_dim is not None:
            axis = self._placement.plan.dims.index(index_dim)
            return ScanAttributeDataset(group, placement, attribute, index_axis=axis, chunk=chunk)
        itemsize = ATTRIBUTE_STRING_SIZE if attribute.dtype is NDAttrType.String else 8
        leading = dims.attribute_chunks(self.options.num_capture, self.options.ndattribute_chunk,
                                        itemsize)
        return ScanAttributeDataset(group, placement, attribute, leading=leading if multi else (),
                                    multi_frame=multi)

    def _write_root_attributes(self, file_name: str) -> None:
        root = self.file
        now = datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")
        for name, value in (("file_name", file_name), ("file_time", now),
                            ("creator", self.options.creator),
                            ("HDF5_Version", h5py.version.hdf5_version),
                            ("h5py_version", h5py.version.version)):
            if name not in root.attrs:
                set_string_attribute(root, name, value)

    def _create_hard_links(self) -> None:
        def walk(group: Group):
            yield from group.hardlinks
            for child in group.groups:
                yield from walk(child)

        for link in walk(self.layout.root):
            if link.target not in self.file:
                self.warnings.append(f"hard link {link.path} -> {link.target}: target does "
                                     "not exist; link not created")
                continue
            parent, name = link.path.rsplit("/", 1)
            group = self.file.require_group(parent or "/")
            if name in group:  # e.g. an NDAttribute dataset of that name (ADCore: link fails)
                self.warnings.append(f"hard link {link.path}: the name is taken by another "
                                     "object; link not created")
                continue
            group[name] = self.file[link.target]
