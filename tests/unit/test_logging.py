"""The processes' log set-up (engine/process/runtime.py): every record keeps its message,
level, logger and extra fields, and none pays for the caller's frame, thread or process,
which no format prints (a worker at DEBUG writes two records per job)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from engine.core import settings
from engine.process import runtime


@pytest.fixture
def restored() -> Iterator[None]:
    root = logging.getLogger()
    saved = (logging._srcfile, logging.logThreads, logging.logProcesses,
             logging.logMultiprocessing, root.handlers[:], root.level)
    yield
    (logging._srcfile, logging.logThreads, logging.logProcesses,
     logging.logMultiprocessing, root.handlers[:], level) = saved
    root.setLevel(level)


def _configured(fmt: str) -> tuple[io.StringIO, list[logging.LogRecord]]:
    runtime.configure_logging(settings.load({"WARDEN_LOG_FORMAT": fmt}))
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    out = io.StringIO()
    handler.setStream(out)
    records: list[logging.LogRecord] = []
    handler.addFilter(lambda record: records.append(record) or True)
    return out, records


@pytest.mark.usefixtures("restored")
def test_a_json_record_keeps_its_fields_without_the_callers_frame() -> None:
    out, records = _configured("json")
    logging.getLogger("engine.worker.runner").info(
        "job %s claimed", "r:a@1", extra={"job_id": "r:a@1", "step_id": "a"})
    doc = json.loads(out.getvalue())
    assert doc["message"] == "job r:a@1 claimed" and doc["level"] == "INFO"
    assert doc["logger"] == "engine.worker.runner"
    assert doc["job_id"] == "r:a@1" and doc["step_id"] == "a"
    [record] = records
    # the frame, thread and process were never looked up
    assert record.funcName == "(unknown function)" and record.lineno == 0
    assert record.thread is None and record.process is None and record.processName is None


@pytest.mark.usefixtures("restored")
def test_a_text_record_prints_time_level_logger_and_message() -> None:
    out, _ = _configured("text")
    logging.getLogger("engine.daemons.reaper").warning("reaped %d", 3)
    line = out.getvalue().strip()
    assert line.endswith(" WARNING engine.daemons.reaper reaped 3"), line
