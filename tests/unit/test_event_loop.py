"""The event loop a command runs on (engine/process/runtime.py, WARDEN_EVENT_LOOP)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from engine.core import settings
from engine.core.errors import ConfigError
from engine.process import runtime


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_runs_a_command_on_uvloop_where_it_is_installed() -> None:
    assert runtime.run(_loop_module(), settings.load({})).startswith("uvloop")


def test_asyncio_runs_it_on_asyncios_own_loop() -> None:
    chosen = settings.load({"WARDEN_EVENT_LOOP": "asyncio"})
    assert runtime.run(_loop_module(), chosen).startswith("asyncio")


def test_without_uvloop_auto_falls_back_and_uvloop_says_what_is_missing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # an import of it now fails
    assert runtime.run(_loop_module(), settings.load({})).startswith("asyncio")
    with pytest.raises(ConfigError, match="WARDEN_EVENT_LOOP=uvloop, but uvloop is not"):
        runtime.run(_loop_module(), settings.load({"WARDEN_EVENT_LOOP": "uvloop"}))


def test_an_unknown_loop_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="WARDEN_EVENT_LOOP must be one of auto, uvloop, "
                                          "asyncio, got 'trio'"):
        settings.load({"WARDEN_EVENT_LOOP": "trio"})


def test_a_long_running_process_freezes_its_start_up_heap_and_still_collects_cycles() -> None:
    """runtime.settle_heap (called by serve and worker once started), in a process of its
    own: the collector's state is per process."""
    code = """
import gc
from engine.process import runtime
class Node: pass
kept = Node(); kept.me = kept
gc.collect()
runtime.settle_heap()
frozen = gc.get_freeze_count()
later = Node(); later.me = later
del later
print(frozen > 0, gc.get_threshold()[0], gc.collect() >= 1)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.split() == ["True", "10000", "True"]
