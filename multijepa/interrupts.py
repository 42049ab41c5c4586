"""Ctrl-C and SIGTERM as requests to stop cleanly: the training loops finish the step they are in,
write a checkpoint and say how to resume, instead of dying with everything since the last one.

A second Ctrl-C while the first is being honoured stops at once (Python's KeyboardInterrupt).
"""

from __future__ import annotations

import signal
import threading


class TrainingInterrupted(Exception):
    """A run stopped on a signal after writing its checkpoint; the message says how to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum  # what a shell reports for a process the signal ended


class StopRequests:
    """Within the block, SIGINT and SIGTERM set `.signum` instead of ending the process. Outside the
    main thread (where Python cannot take signals) it does nothing."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: stop now
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: finishing this step and writing a checkpoint "
              "(Ctrl-C again to stop at once)", flush=True)

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
