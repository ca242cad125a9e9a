"""Console logging: caproto's harmless client races stay out of the operator's log."""

from __future__ import annotations

import logging

from ioc.plugin.ioc_logging import quiet_late_answers


class LocalProtocolError(Exception):
    pass


def _log_invalid_command(message: str) -> None:
    try:
        raise LocalProtocolError(message)
    except LocalProtocolError:
        logging.getLogger("caproto.circ").warning(
            "Invalid command %r for Channel %r in state %r", "EventAddResponse", "ch", "s",
            exc_info=True)


def test_an_answer_for_a_closed_channel_is_one_debug_line(caplog):
    quiet_late_answers()
    quiet_late_answers()  # idempotent
    assert logging.getLogger("caproto.circ").filters.count(
        logging.getLogger("caproto.circ").filters[0]) == 1
    with caplog.at_level(logging.DEBUG):
        _log_invalid_command("<ChannelState ...> cannot handle command type "
                             "EventCancelResponse when role=Role.SERVER and state=States.CLOSED")
    assert [r.levelno for r in caplog.records if r.name == "caproto.circ"] == []
    (line,) = [r for r in caplog.records if r.name == "ioc.ca"]
    assert line.levelno == logging.DEBUG and "closed channel" in line.getMessage()


def test_other_protocol_errors_still_warn(caplog):
    quiet_late_answers()
    with caplog.at_level(logging.WARNING):
        _log_invalid_command("cannot handle command type X when state=States.CONNECTED")
    (record,) = [r for r in caplog.records if r.name == "caproto.circ"]
    assert record.levelno == logging.WARNING and record.exc_info
