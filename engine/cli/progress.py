"""A one-line live status for long commands (`warden demo`, `warden runs watch`).

On a terminal the line is redrawn in place and stays below the messages printed above
it. Anywhere else (a pipe, a log file, CI) each new status is one plain line, printed
only when it changes, with no cursor codes: a log of a long run stays short and greppable.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from typing import TextIO

from engine.core.enums import RunStatus
from engine.store.records import ItemRow, StepRow

_CLEAR_LINE = "\r\x1b[2K"


class StatusLine:
    def __init__(self, stream: TextIO | None = None, *, terminal_only: bool = False) -> None:
        """``terminal_only``: off a terminal show() prints nothing, for commands whose
        other output already tells the progress (`runs watch` prints the timeline)."""
        self._stream = stream or sys.stdout
        self._tty = self._stream.isatty()
        self._silent = terminal_only and not self._tty
        self._text: str | None = None
        self._drawn = False  # a TTY status line is on screen, without its newline

    @property
    def shown(self) -> bool:
        """Whether show() prints anything (callers may skip computing the status)."""
        return not self._silent

    def show(self, text: str) -> None:
        """The current status; printed only if it differs from the last one."""
        if text == self._text or self._silent:
            return
        self._text = text
        if self._tty:
            self._draw()
        else:
            self._stream.write(text + "\n")
            self._stream.flush()

    def say(self, message: str) -> None:
        """A message above the status line, which a terminal shows again below it."""
        if self._drawn:
            self._stream.write(_CLEAR_LINE)
            self._drawn = False
        self._stream.write(message + "\n")
        if self._tty and self._text is not None:
            self._draw()
        self._stream.flush()

    def close(self) -> None:
        """Leaves the last status on screen and moves below it."""
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False

    def _draw(self) -> None:
        assert self._text is not None
        # a line wider than the terminal would wrap, and \r would only redraw its tail
        width = max(20, shutil.get_terminal_size().columns - 1)
        self._stream.write(_CLEAR_LINE + self._text[:width])
        self._stream.flush()
        self._drawn = True


def run_summary(status: RunStatus, steps: Sequence[StepRow],
                items: Sequence[ItemRow] = ()) -> str:
    """``run waiting | detect:succeeded … apply_patch:running#2 …`` (#n: the attempt;
    a for_each step adds ``[done/total]``, its items ended and in all)."""
    total: dict[str, int] = {}
    done: dict[str, int] = {}
    for item in items:
        total[item.step_id] = total.get(item.step_id, 0) + 1
        done[item.step_id] = done.get(item.step_id, 0) + int(item.status.is_final)
    parts = [f"{s.step_id}:{s.status.value}" + (f"#{s.attempts}" if s.attempts > 1 else "")
             + (f"[{done[s.step_id]}/{total[s.step_id]}]" if s.step_id in total else "")
             for s in steps]
    return f"run {status.value} | {' '.join(parts)}"
