"""The traced response body: first byte, streaming, and ``close()`` exactly once.

Three rules from PEP 3333 and from what other tracers got wrong:

* a ``wsgi.file_wrapper`` object is returned *as is* (gunicorn only uses
  sendfile for an instance of its own wrapper class); only its ``close``
  attribute is wrapped, on the instance;
* every other body is wrapped in a small iterator class, not a generator,
  because a generator the server never iterates never runs its ``finally``
  and the inner ``close()`` would be lost;
* the inner ``close()`` is called exactly once, whatever the server does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from operator import length_hint
from typing import Any

from opentelemetry.context import attach, detach

from flowtrace.capture.timeline import Timeline, clock, current

Finish = Callable[[Timeline], None]

# Iterators that run no application code: no need to switch context per chunk.
_PLAIN_ITERATORS: tuple[type, ...] = (type(iter([])), type(iter(())), type(iter(b"")))
# ... and over ready-made chunks, which can be counted up front (see _hand_over).
_READY_MADE: tuple[type, ...] = (type(iter([])), type(iter(())))


def _byte_count(chunks: list[bytes]) -> int:
    """Bytes in the chunks (non-bytes chunks are the server's problem, not ours)."""
    try:
        return sum(map(len, chunks))
    except TypeError:  # as __next__ counts: what has a length
        return sum(len(c) for c in chunks if hasattr(c, "__len__"))


class TracedBody:
    """Wraps a WSGI response iterable; records chunks, bytes and the close."""

    __slots__ = ("_inner", "_it", "_tl", "_finish", "_closed", "_done", "_plain", "_ready")

    def __init__(self, inner: Iterable[bytes], tl: Timeline, finish: Finish) -> None:
        self._inner = inner
        self._it: Iterator[bytes] | None = None
        self._tl = tl
        self._finish = finish
        self._closed = False
        self._done = False
        self._plain = False
        self._ready: list[bytes] | None = None  # ready-made chunks, handed over as a list

    def __iter__(self) -> Iterator[bytes]:
        if self._it is None:
            token = current.set(self._tl)
            ctx = self._tl.otel_context
            otel_token = attach(ctx) if ctx is not None else None
            try:
                self._it = iter(self._inner)
            finally:
                if otel_token is not None:
                    detach(otel_token)
                current.reset(token)
            kind = type(self._it)
            self._plain = kind in _PLAIN_ITERATORS
            if kind in _READY_MADE:
                self._hand_over(self._it)
        if self._ready is not None:
            return self._it
        return self

    def _hand_over(self, it: Iterator[bytes]) -> None:
        """A body of ready-made chunks (Django's HttpResponse is a list): no app
        code runs while the server pulls them, so count them now and give the
        server a C-level iterator, not a Python ``__next__`` per chunk. The
        first byte is taken at ``iter()``, a call before the server's first
        ``next()``; ``close()`` tells how many chunks the server took."""
        chunks = list(it)
        tl = self._tl
        self._ready = chunks
        self._it = iter(chunks)
        if chunks:
            tl.t_first_chunk = clock()
        tl.chunks = len(chunks)
        tl.bytes_sent = _byte_count(chunks)

    def __next__(self) -> bytes:
        it = self._it
        if it is None:
            self.__iter__()
            it = self._it
            assert it is not None
        if self._ready is not None:  # handed over and counted; a server calling next() anyway
            return next(it)
        tl = self._tl
        if self._plain:
            try:
                chunk = next(it)
            except StopIteration:
                self._done = True
                tl.t_last_chunk = clock()
                raise
        else:  # app code runs here (a generator): the request's contexts are current
            token = current.set(tl)
            ctx = tl.otel_context
            otel_token = attach(ctx) if ctx is not None else None
            try:
                chunk = next(it)
            except StopIteration:
                self._done = True
                tl.t_last_chunk = clock()
                raise
            except BaseException as exc:
                if tl.exc is None and not isinstance(exc, GeneratorExit):
                    tl.exc = exc
                raise
            finally:
                if otel_token is not None:
                    detach(otel_token)
                current.reset(token)
        if not tl.chunks:
            tl.t_first_chunk = clock()
        tl.chunks += 1
        try:  # noqa: SIM105 - cheaper than contextlib.suppress per chunk
            tl.bytes_sent += len(chunk)
        except TypeError:  # not bytes: the server will complain, not us
            pass
        return chunk

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        ready = self._ready
        if ready is not None:
            left = length_hint(self._it)  # chunks the server did not take
            self._done = not left
            if left:
                self._tl.chunks = len(ready) - left
                self._tl.bytes_sent = _byte_count(ready[: len(ready) - left])
        self._tl.client_gone = not self._done
        timed_close(self._tl, getattr(self._inner, "close", None), self._finish)


class SizedTracedBody(TracedBody):
    """A TracedBody over a sized iterable: keeps ``len()`` for servers (wsgiref)
    that set Content-Length from a one-element body."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._inner)  # type: ignore[arg-type]


def timed_close(tl: Timeline, inner_close: Callable[[], object] | None, finish: Finish) -> None:
    """Call the inner ``close()`` (once, by the caller's guard), timed, then finish."""
    tl.t_close_start = clock()
    token = current.set(tl)
    ctx = tl.otel_context  # request_finished receivers: spans they make join the trace
    otel_token = attach(ctx) if ctx is not None else None
    try:
        if inner_close is not None:
            inner_close()
    except BaseException as exc:
        if tl.exc is None:
            tl.exc = exc
        raise
    finally:
        if otel_token is not None:
            detach(otel_token)
        current.reset(token)
        tl.t_close_end = clock()
        finish(tl)


def _hook_file_wrapper_close(result: Any, tl: Timeline, finish: Finish) -> bool:
    """Time a file-wrapper response through its instance ``close`` attribute."""
    inner_close = getattr(result, "close", None)
    closed = [False]

    def close() -> None:
        if not closed[0]:
            closed[0] = True
            timed_close(tl, inner_close, finish)

    try:
        result.close = close
    except (AttributeError, TypeError):
        return False
    return True


def wrap_body(result: Any, environ: dict[str, Any], tl: Timeline, finish: Finish) -> Any:
    """Return what the server should get: the same file wrapper, or a TracedBody."""
    file_wrapper = environ.get("wsgi.file_wrapper")
    if isinstance(file_wrapper, type) and isinstance(result, file_wrapper):
        tl.file_wrapper = True
        # the server sends the bytes itself (sendfile): the first byte's time is the
        # moment the file is handed over, the earliest the server can send it
        tl.t_first_chunk = tl.t_return
        if not _hook_file_wrapper_close(result, tl, finish):
            # Cannot see its close (e.g. __slots__): the request ends here.
            tl.t_close_start = tl.t_close_end = tl.t_return
            finish(tl)
        return result
    if hasattr(result, "__len__"):
        return SizedTracedBody(result, tl, finish)
    return TracedBody(result, tl, finish)
