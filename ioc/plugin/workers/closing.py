"""The coordinator's file work and what it reports: the master file at the end of a capture
(parts of lost workers recovered first), the live master of a SWMR capture, the layout
sent to the workers, and the PV values that describe the outcome.  Runs in the
coordinator's executor thread (blocking I/O), except the pure formatting helpers."""

from __future__ import annotations

import base64
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ...layout._xml import read_xml_input
from ...layout.model import LayoutError, parse_layout
from ...ndarray import NDDataType
from ...writer.nexus import WriterError
from ...writer.part import clear_swmr_flag
from ...writer.vds import MASTER_GROUP, MasterResult, MasterSource, write_master
from ..naming import PathPolicy, temporary_name
from .ledger import CLOSED, Ledger

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    result: MasterResult | None
    problems: list[str] = field(default_factory=list)  # parts lost, unreadable, ...
    warnings: list[str] = field(default_factory=list)  # the parts' layout warnings


def layout_payload(spec: str, policy: PathPolicy) -> tuple[str, str]:
    """The layout for the workers: its XML bytes (base64) and where it came from; checked
    here first, so that a bad layout is refused before any worker starts."""
    if not spec.strip():
        return "", ""
    xml = read_xml_input(spec, inline_marker=("<?xml",), error=LayoutError,
                         allowed_roots=policy.roots)
    parse_layout(xml)
    return base64.b64encode(xml.text).decode(), xml.source


def attributes_text(spec: str, policy: PathPolicy) -> str:
    """An NDAttributes file's XML (or the inline XML itself), for the workers."""
    xml = read_xml_input(spec, inline_marker=("<Attributes", "<?xml"), error=LayoutError,
                         allowed_roots=policy.roots)
    return xml.text.decode("utf-8", "replace")


def recover(final: Path, suffix: str) -> tuple[Path | None, str]:
    """A lost worker's part under its final name, readable by plain readers; (None, why)
    when there is none.  Its writer may have died before renaming it, or left it marked
    open for SWMR writing."""
    if not final.exists():
        temporary = temporary_name(final, suffix)
        try:
            os.replace(temporary, final)
        except FileNotFoundError:
            if not final.exists():
                return None, "no part file"
        except OSError as exc:
            return None, f"cannot rename {temporary}: {exc}"
    try:
        h5py.File(final, "r").close()
        return final, ""
    except OSError as first:
        try:
            clear_swmr_flag(final)
            h5py.File(final, "r").close()
            return final, ""
        except (OSError, WriterError) as exc:
            return None, f"unreadable ({first}; {exc})"


def write_final_master(ledger: Ledger, master: Path, suffix: str) -> Outcome:
    outcome = Outcome(None, list(ledger.lost_messages))
    sources = []
    for part in sorted(ledger.parts.values(), key=lambda p: p.number):
        outcome.warnings += part.warnings
        if part.final is None:
            continue
        path = part.final
        if part.state != CLOSED:
            path, why = recover(part.final, suffix)
            if path is None:
                if part.uids:
                    outcome.problems.append(f"part {part.final.name} of {part.label}: {why}")
                continue
        elif not path.exists():
            continue  # closed without frames: no file
        sources.append(MasterSource(path.name, path, part.label, number=part.number,
                                    state="closed" if part.state == CLOSED else part.state))
    if not sources:
        outcome.problems.append("no frames were written: no master file")
        return outcome
    first, last = ledger.window()
    outcome.result = write_master(master, sources, first_uid=first, last_uid=last)
    outcome.problems += outcome.result.warnings
    if outcome.result.before:  # UniqueIds that went back (a detector restarted mid-capture)
        outcome.problems.append(f"{outcome.result.before} frames in the parts have UniqueIds "
                                f"below the capture's first ({first}): not in the master")
    return outcome


def write_live_master(ledger: Ledger, master: Path) -> None:
    first, last = ledger.live_window()
    if first is None or last is None or last < first:
        return
    sources = [MasterSource(p.final.name, p.final, p.label, limit=p.durable, state="open",
                            number=p.number)
               for p in sorted(ledger.parts.values(), key=lambda p: p.number)
               if p.final is not None and p.durable > 0 and p.final.exists()]
    if sources:
        write_master(master, sources, first_uid=first, last_uid=last, swmr_read=True,
                     libver="latest")


def ranges(uids: np.ndarray, limit: int = 6) -> str:
    """[3, 4, 5, 9] -> "3-5, 9" (the first ``limit`` ranges, then "...")."""
    if uids.size == 0:
        return ""
    breaks = np.flatnonzero(np.diff(uids) != 1) + 1
    parts = []
    for run in np.split(uids, breaks)[:limit]:
        parts.append(f"{run[0]}" if run.size == 1 else f"{run[0]}-{run[-1]}")
    return ", ".join(parts) + (", ..." if breaks.size >= limit else "")


def outcome_pvs(outcome: Outcome, ledger: Ledger, master: Path, runtime: float,
                frame_bytes: int) -> dict:
    result = outcome.result
    written = result.written if result is not None else 0
    missing = result.missing if result is not None else np.zeros(0, np.int64)
    values = {"NumCaptured_RBV": written, "MissingFrames_RBV": int(missing.size),
              "RunTime": runtime, "IOSpeed": written * frame_bytes * 8 / 2**20 / runtime}
    if missing.size:
        where = f"{master.name}:{MASTER_GROUP}/missing_unique_ids"
        message = (f"{missing.size} frames missing (UniqueIds {ranges(missing)}; listed in "
                   f"{where})")
        if outcome.problems:
            message += f": {outcome.problems[0]}"
        values.update(WriteStatus=1, WriteMessage=message[:255])
    elif outcome.problems:
        values.update(WriteStatus=1, WriteMessage=outcome.problems[0][:255])
    elif outcome.warnings:
        values.update(WriteMessage=f"Written with warnings: {outcome.warnings[0]}"[:255])
    log.info("capture %d: master %s, %d frames, %d missing", ledger.capture, master, written,
             missing.size)
    return values


def describe(post, last: dict) -> None:
    """The readbacks a frame sets (UniqueId_RBV, sizes, type), from a worker's report."""
    dims = [int(d) for d in last.get("dims", [])][:10]
    padded = dims + [0] * (10 - len(dims))
    values = {"UniqueId_RBV": int(last["uid"]), "TimeStamp_RBV": float(last.get("timestamp", 0)),
              "EpicsTSSec_RBV": int(last.get("sec", 0)), "EpicsTSNsec_RBV": int(last.get("nsec", 0)),
              "DataType_RBV": int(last.get("dtype", 0)), "ColorMode_RBV": int(last.get("color", 0)),
              "NDimensions_RBV": len(dims), "Dimensions_RBV": padded}
    for i in range(10):
        values[f"ArraySize{i}_RBV"] = values[f"ArraySize{i}"] = padded[i]
    post(**values)


def frame_bytes(last: dict) -> int:
    try:
        itemsize = NDDataType(int(last.get("dtype", 0))).numpy.itemsize
    except ValueError:
        return 0
    return int(np.prod(last.get("dims") or [0])) * itemsize


def workers_line(links, ledger: Ledger | None) -> str:
    """One line for WorkersMessage_RBV: each worker and what it wrote in this capture."""
    if not links and not (ledger and ledger.parts):
        return "no writer worker connected"
    items = []
    for link in links:
        part = ledger.parts.get(link.id) if ledger is not None else None
        items.append(f"{link.label}" + (f" {len(part.uids)} frames" if part else ""))
    if ledger is not None:
        items += [f"{p.label} {p.state}" for p in ledger.parts.values()
                  if p.state not in ("starting", "capturing", "closed")]
    return f"{len(links)} connected: " + ", ".join(items)
