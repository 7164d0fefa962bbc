"""The exporter thread: Timelines in (bounded), spans and metrics out.

The request thread's only cost is ``submit()``: a length check and a deque
append. One daemon thread per process builds trees, records metrics and
hands spans to the SDK. When the queue is full the request's telemetry is
dropped and counted (``flowtrace.telemetry.dropped``): memory stays bounded
whatever the collector does. The thread is (re)started lazily, so a
gunicorn ``--preload`` fork gets its own; pending work is flushed at exit,
within ``shutdown_timeout`` seconds whatever the collector does.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable

from flowtrace import safety
from flowtrace.capture.timeline import Timeline

Process = Callable[[Timeline], None]


class Pipeline:
    """A bounded hand-off from request threads to one exporter thread."""

    def __init__(
        self,
        process: Process,
        max_pending: int,
        interval: float,
        after_drain: Callable[[], None] | None = None,
        exit_budget: float = 2.0,
        before_exit: Callable[[float], None] | None = None,
        after_exit: Callable[[float], None] | None = None,
    ) -> None:
        self._process = process
        self._after_drain = after_drain
        self._exit_budget = exit_budget
        self._before_exit = before_exit
        self._after_exit = after_exit
        self._max_pending = max_pending
        self._wake_at = max(1, min(512, max_pending // 4))
        self._interval = interval
        self._pending: deque[Timeline] = deque()
        self._wake = threading.Event()
        self._busy = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.dropped = 0
        self.processed = 0
        ref = weakref.ref(self)

        def after_fork() -> None:
            pipeline = ref()
            if pipeline is not None:
                pipeline._after_fork()

        def at_exit() -> None:
            pipeline = ref()
            if pipeline is not None:
                pipeline.shutdown()

        os.register_at_fork(after_in_child=after_fork)
        atexit.register(at_exit)

    def submit(self, tl: Timeline) -> None:
        """Queue a finished request; never blocks, drops when full."""
        pending = self._pending
        if len(pending) >= self._max_pending or self._stopped:
            self.dropped += 1
            return
        pending.append(tl)
        if self._thread is None:
            self._start()
        elif len(pending) >= self._wake_at:
            self._wake.set()

    def _start(self) -> None:
        with self._busy:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="flowtrace-export", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self._interval)
            self._wake.clear()
            self.drain()

    def drain(self, deadline: float | None = None) -> None:
        """Process everything pending, in this thread, then hand on what was built.

        With a ``deadline`` (``time.monotonic()``), give up when it passes:
        what is left is dropped and counted, so exit never hangs.
        """
        pending = self._pending
        while pending:
            if not self._acquire(deadline):
                break
            try:
                tl = pending.popleft()
            except IndexError:
                self._busy.release()
                break
            try:
                self._process(tl)
                self.processed += 1
            except Exception as exc:
                self.dropped += 1
                safety.report("export", exc, reraise=False)
            finally:
                self._busy.release()
        if deadline is not None and pending:
            self.dropped += len(pending)
            pending.clear()
        if self._after_drain is not None and self._acquire(deadline):
            try:
                self._after_drain()
            except Exception as exc:
                safety.report("send", exc, reraise=False)
            finally:
                self._busy.release()

    def _acquire(self, deadline: float | None) -> bool:
        if deadline is None:
            return self._busy.acquire()
        return self._busy.acquire(timeout=max(deadline - time.monotonic(), 0.0))

    def flush(self) -> None:
        """Process everything submitted so far before returning."""
        self.drain()
        with self._busy:  # wait for an item the thread may be processing
            pass

    def shutdown(self) -> None:
        """Final flush at exit, bounded by ``exit_budget`` seconds."""
        if self._stopped:
            return
        self._stopped = True  # from now on submit() drops (and counts)
        deadline = time.monotonic() + self._exit_budget
        try:
            # under the lock: the export thread may be using the connection right now
            if self._before_exit is not None and self._acquire(deadline):
                try:
                    self._before_exit(self._exit_budget)
                finally:
                    self._busy.release()
            self.drain(deadline)
            if self._after_exit is not None:  # given what is left of the budget
                self._after_exit(max(deadline - time.monotonic(), 0.0))
        except Exception as exc:
            safety.report("shutdown", exc, reraise=False)
        self._wake.set()

    def _after_fork(self) -> None:
        """In a forked child: the parent's thread does not exist here."""
        self._pending = deque()
        self._wake = threading.Event()
        self._busy = threading.Lock()
        self._thread = None
