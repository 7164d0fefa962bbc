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
from typing import Any

from flowtrace.timeline import Timeline, clock, current

Finish = Callable[[Timeline], None]

# Iterators that run no application code: no need to switch context per chunk.
_PLAIN_ITERATORS: tuple[type, ...] = (type(iter([])), type(iter(())), type(iter(b"")))


class TracedBody:
    """Wraps a WSGI response iterable; records chunks, bytes and the close."""

    __slots__ = ("_inner", "_it", "_tl", "_finish", "_closed", "_done", "_plain")

    def __init__(self, inner: Iterable[bytes], tl: Timeline, finish: Finish) -> None:
        self._inner = inner
        self._it: Iterator[bytes] | None = None
        self._tl = tl
        self._finish = finish
        self._closed = False
        self._done = False
        self._plain = False

    def __iter__(self) -> TracedBody:
        if self._it is None:
            token = current.set(self._tl)
            try:
                self._it = iter(self._inner)
            finally:
                current.reset(token)
            self._plain = type(self._it) in _PLAIN_ITERATORS
        return self

    def __next__(self) -> bytes:
        it = self._it
        if it is None:
            self.__iter__()
            it = self._it
            assert it is not None
        tl = self._tl
        if self._plain:
            try:
                chunk = next(it)
            except StopIteration:
                self._done = True
                tl.t_last_chunk = clock()
                raise
        else:
            token = current.set(tl)
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
    try:
        if inner_close is not None:
            inner_close()
    except BaseException as exc:
        if tl.exc is None:
            tl.exc = exc
        raise
    finally:
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
        if not _hook_file_wrapper_close(result, tl, finish):
            # Cannot see its close (e.g. __slots__): the request ends here.
            tl.t_close_start = tl.t_close_end = tl.t_return
            finish(tl)
        return result
    if hasattr(result, "__len__"):
        return SizedTracedBody(result, tl, finish)
    return TracedBody(result, tl, finish)
