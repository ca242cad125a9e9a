"""What the parts of the file saver (``file_saver.py`` and its ``_saver_*`` mixins) share:
the write modes, the refusal exception, the logger, and how a failure is worded."""

from __future__ import annotations

import logging

from ..layout.model import LayoutError
from ..writer.nexus import WriterError
from ..writer.recovery import describe_error
from .naming import PathPolicy, TemplateError

# One logger for the whole saver, whichever module a line comes from: its lines keep the
# name they had when the saver was one module (operators filter on it).
log = logging.getLogger("ioc.plugin.file_saver")

SINGLE, CAPTURE, STREAM = 0, 1, 2
INT32_MAX = 2**31 - 1


class SaverError(Exception):
    """A refused action; the message is what WriteMessage shows."""


NO_POLICY = PathPolicy()


def cause_of(exc: BaseException) -> str:
    """Our own exceptions say what happened; h5py's and the system's are cut to the cause."""
    if isinstance(exc, (SaverError, WriterError, LayoutError, TemplateError)):
        return str(exc)
    return describe_error(exc)
