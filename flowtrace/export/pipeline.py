"""The exporter thread: Timelines in (bounded), spans and metrics out.

The request thread's only cost is ``submit()``: a length check and a deque
append. One daemon thread per process builds trees, records
metrics and hands spans to the SDK. When the queue is full the request's
telemetry is dropped and counted (``flowtrace.telemetry.dropped``): memory
stays bounded whatever the collector does. Pending work is flushed at exit,
within ``shutdown_timeout`` seconds whatever the collector does.

Forks: the thread is (re)started lazily, so a gunicorn ``--preload`` fork gets
its own. A server that forks from C without Python's fork hooks (uWSGI's
default mode) is caught by the front end's pid check at the start of a request
(before any id is drawn), which calls ``forked()``; either way every
``on_fork`` callback runs once in the child (told whether Python's own hooks
ran, i.e. whether the SDK restarted its threads itself).

Under gevent the thread is a greenlet: a drain yields to the hub every
``_YIELD_EVERY_NS`` of work, so it never holds up the worker's requests for
longer than that. Under ASGI the front end asks for the same with a real pause
(``pause``, ``yield_every_ns``), so the event loop gets the GIL back.
"""

from __future__ import annotations

import atexit
import multiprocessing.util as multiprocessing_util
import os
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from os import getpid
from time import thread_time_ns

from flowtrace import safety
from flowtrace.capture.timeline import Timeline, clock
from flowtrace.export.sigterm import chain_sigterm

Process = Callable[[Timeline], None]
ForkCallback = Callable[[bool], None]  # called in the child: did Python's fork hooks run?
_YIELD_EVERY_NS = 2_000_000  # under gevent: hand the hub back after 2 ms of work


class SelfCost:
    """What flowtrace's export work cost this process: CPU time of the export thread
    (read around each drain: two ``thread_time_ns()`` calls per drain, not per
    request), requests and events processed."""

    __slots__ = ("cpu_ns", "requests", "events")

    def __init__(self) -> None:
        self.cpu_ns = self.requests = self.events = 0

    def add(self, cpu_ns: int, requests: int, events: int) -> None:
        self.cpu_ns += cpu_ns
        self.requests += requests
        self.events += events

    def per_request_us(self) -> float | None:
        """Mean µs per request so far; None before the first drain was measured."""
        return self.cpu_ns / self.requests / 1e3 if self.requests else None


def _gevent_patched() -> bool:
    """True when threading is gevent's (the export thread is then a greenlet)."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey is not None and monkey.is_module_patched("threading"))


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
        self._stopped = False  # submit() drops from now on
        self._finished = False  # the export thread ends
        self._task: Callable[[], None] | None = None
        self._task_done = threading.Event()
        self.pid = getpid()
        self._forks: dict[int, int] = {}  # pid -> the thread that handles its fork (once)
        self.on_fork: list[ForkCallback] = []
        self.dropped = 0
        self.processed = 0
        self.submitted = 0
        self.cost = SelfCost()
        # an event loop shares the GIL with this thread (ASGI): pause this long
        # after every _YIELD_EVERY_NS of work (see drain)
        self.pause = 0.0
        self.yield_every_ns = _YIELD_EVERY_NS
        # responses handed to the server and not closed yet (WSGI; a server writes them
        # from another thread, so several can be pending), the requests being served
        # (ASGI): see shutdown
        self.handed: set[Timeline] = set()
        self.in_flight: set[Timeline] = set()
        # a request's own thread ending it and shutdown ending it for the server must
        # not both submit it, nor both skip it (see end_request and shutdown)
        self._ending = threading.Lock()
        self._taken: set[Timeline] = set()  # ended by shutdown
        ref = weakref.ref(self)

        def after_fork() -> None:
            pipeline = ref()
            if pipeline is not None:
                pipeline._after_fork(True)

        def at_exit() -> None:
            pipeline = ref()
            if pipeline is not None:
                pipeline.shutdown()

        os.register_at_fork(after_in_child=after_fork)
        atexit.register(at_exit)
        # A process started by multiprocessing (uvicorn --workers, hypercorn --workers,
        # granian) ends with os._exit(): atexit never runs there, its finalizers do.
        multiprocessing_util.Finalize(None, at_exit, exitpriority=10)
        chain_sigterm(at_exit)  # a server that dies on SIGTERM without exit handlers

    def submit(self, tl: Timeline) -> None:
        """Queue a finished request; never blocks, drops when full."""
        self.submitted += 1
        pending = self._pending
        if len(pending) >= self._max_pending or self._stopped:
            self.dropped += 1
            return
        pending.append(tl)
        if self._thread is None:
            self._start()
        elif len(pending) >= self._wake_at:
            self._wake.set()

    def end_request(self, tl: Timeline) -> None:
        """A request ended by its own thread (the front ends): submitted, unless the
        shutdown already ended it (a server exiting while this thread finished)."""
        with self._ending:
            if tl in self._taken:
                return
            self.handed.discard(tl)
            self.in_flight.discard(tl)
            self.submit(tl)

    def _start(self) -> None:
        with self._busy:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="flowtrace-export", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        cooperative = _gevent_patched() or self.pause > 0
        while not self._finished:
            self._wake.wait(self._interval)
            self._wake.clear()
            task = self._task
            if task is not None:  # work handed over at exit (see run_on_export_thread)
                self._task = None
                try:
                    task()
                finally:
                    self._task_done.set()
                continue
            self.drain(cooperative=cooperative)

    def run_on_export_thread(self, task: Callable[[], None], timeout: float) -> bool:
        """Run ``task`` on the export thread, waiting at most ``timeout`` seconds (then
        it is abandoned, with the daemon thread). At interpreter shutdown Python 3.12+
        refuses new threads; this one already exists. False if there is none."""
        thread = self._thread
        if thread is None or not thread.is_alive() or thread is threading.current_thread():
            return False
        self._task_done.clear()
        self._task = task
        self._wake.set()
        self._task_done.wait(timeout)
        return True

    def drain(self, deadline: float | None = None, cooperative: bool = False) -> None:
        """Process everything pending, in this thread, then hand on what was built.

        With a ``deadline`` (``time.monotonic()``), give up when it passes:
        what is left is dropped and counted, so exit never hangs. With
        ``cooperative`` (gevent), yield to the hub every few milliseconds.
        """
        pending = self._pending
        if not pending and self._after_drain is None:
            return
        cpu_start = thread_time_ns()  # flowtrace's own cost, reported as a metric
        processed, events = self.processed, 0
        slice_start = time.perf_counter_ns()
        while pending:
            if cooperative and time.perf_counter_ns() - slice_start > self.yield_every_ns:
                time.sleep(self.pause)  # gevent's sleep, or a real one: let the loop run
                slice_start = time.perf_counter_ns()
            if not self._acquire(deadline):
                break
            try:
                tl = pending.popleft()
            except IndexError:
                self._busy.release()
                break
            try:
                events += len(tl.events)
                self._process(tl)
                self.processed += 1
            except Exception as exc:
                self.dropped += 1
                safety.report("export", exc, reraise=False)
            finally:
                self._busy.release()
                # the exception's traceback holds the request's frames, one of which holds
                # this Timeline: a cycle only the cyclic GC would collect
                tl.exc = tl.app_exc = None
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
        self.cost.add(thread_time_ns() - cpu_start, self.processed - processed, events)

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
        # The process ends between a response and the end of its request: a server
        # that exits from a signal handler (uWSGI) never calls close(), one that stops
        # its event loop (granian) never resumes the application after the last body
        # message. The client has its answer: the request counts, ended now.
        # A request thread may be ending its request right now (end_request): one of
        # the two submits it, under the same lock.
        with self._ending:
            ending = list(self.handed)
            ending += [tl for tl in list(self.in_flight) if tl.t_close_start]
            self.handed.clear()
            self.in_flight.clear()
            self._taken.update(ending)
            now = clock()
            for tl in ending:
                tl.t_close_start = tl.t_close_start or now
                tl.t_close_end = tl.t_close_end or now
                self.submit(tl)
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
        self._finished = True
        self._wake.set()

    def forked(self) -> None:
        """The front end saw a new pid at the start of a request: a fork that
        bypassed Python's fork hooks (uWSGI's default mode)."""
        self._after_fork(False)

    def _after_fork(self, python_hooks_ran: bool) -> None:
        """In a forked child: the parent's thread, and its work, do not exist here."""
        pid = getpid()
        if self.pid == pid or self._forks.setdefault(pid, threading.get_ident()) != \
                threading.get_ident():  # fmt: skip
            return  # already done (the hook and the pid check; or another request thread)
        self.pid = pid
        self._pending = deque()
        self._wake = threading.Event()
        self._busy = threading.Lock()
        self._task_done = threading.Event()
        self._task = None
        self._thread = None
        self._ending = threading.Lock()
        self._taken = set()
        self.handed, self.in_flight = set(), set()  # the parent's requests
        self.dropped = self.processed = self.submitted = 0
        self.cost = SelfCost()
        for callback in self.on_fork:
            try:
                callback(python_hooks_ran)
            except Exception as exc:
                safety.report("after_fork", exc, reraise=False)
