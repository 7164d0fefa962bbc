"""Servers that end without running Python's exit handlers must not lose what
they served.

* SIGTERM with nobody handling it (waitress: ``docker stop``, systemd and
  Kubernetes would end it at once, ``atexit`` never runs). Only when the
  C-level disposition is the default and no Python handler is set does
  flowtrace install one: it flushes within ``shutdown_timeout``, then restores
  the default and re-raises the signal, so the process still ends the way it
  would have (killed by SIGTERM). A server's own handler is never replaced; a
  server that installs one later simply replaces flowtrace's (gunicorn's
  master does, with ``--preload``).
* uWSGI skips Python's exit handlers when a worker is stopped while it is still
  finishing a request ("busy": the client already has its response), and the
  worker's whole backlog would be lost. Under uWSGI flowtrace also registers
  its flush with the C library's ``atexit``: registered after uWSGI's own, it
  runs before it, Python still alive, busy or not.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

logger = logging.getLogger("flowtrace")


def _c_handler_is_default(signum: int) -> bool:
    """The process-level disposition, which Python's ``getsignal()`` does not see
    when a server installed its handler in C after the interpreter started."""
    if sys.platform not in ("linux", "darwin"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        buffer = ctypes.create_string_buffer(256)  # struct sigaction: the handler comes first
        if libc.sigaction(signum, None, buffer) != 0:
            return False
        handler = ctypes.c_void_p.from_buffer(buffer).value
    except (OSError, AttributeError, ValueError):
        return False
    return not handler  # SIG_DFL is 0


_flushes: list[Callable[[], None]] = []  # every pipeline's bounded final flush
_installed: list[bool] = []


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    try:
        for flush in list(_flushes):
            try:
                flush()
            except Exception as exc:  # never keep the process from ending
                logger.debug("flowtrace: flush on SIGTERM failed: %r", exc)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def chain_sigterm(flush: Callable[[], None]) -> bool:
    """Run ``flush`` on SIGTERM if SIGTERM would otherwise kill the process on the
    spot (installing one handler for all flushes); True if it will."""
    _flushes.append(flush)
    if _installed:
        return _installed[0]
    _installed.append(_install())
    if _under_uwsgi():  # see the module docstring
        _register_c_atexit()
    return _installed[0]


_c_callbacks: list[Any] = []  # kept alive: the C library calls them at exit()


def _under_uwsgi() -> bool:
    """uWSGI's embedded interpreter has its ``uwsgi`` module built in; it is in
    ``sys.modules`` only once something imported it."""
    return "uwsgi" in sys.modules or "uwsgi" in sys.builtin_module_names


def _run_flushes_at_c_exit(_arg: Any = None) -> None:
    for flush in list(_flushes):
        try:
            flush()
        except Exception as exc:  # the process is ending: never make it worse
            logger.debug("flowtrace: flush at exit failed: %r", exc)


def _register_c_atexit() -> None:
    """Register with the C library's exit handlers. glibc exports no ``atexit``
    symbol (it is a static wrapper): ``__cxa_atexit`` is what it calls."""
    try:
        libc = ctypes.CDLL(None)
        register = getattr(libc, "__cxa_atexit", None)
        if register is not None:
            callback: Any = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_run_flushes_at_c_exit)
            registered = register(callback, None, None) == 0
        else:  # a C library that exports atexit itself (musl, macOS)
            callback = ctypes.CFUNCTYPE(None)(_run_flushes_at_c_exit)
            registered = libc.atexit(callback) == 0
        if registered:
            _c_callbacks.append(callback)
    except (OSError, AttributeError) as exc:
        logger.debug("flowtrace: no C-level exit hook: %r", exc)


def _install() -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False  # only the main thread may; servers that load apps elsewhere own signals
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False
    except (ValueError, AttributeError):
        return False
    if not _c_handler_is_default(signal.SIGTERM):
        return False
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):
        return False
    return True
