"""One long-lived background event loop for synchronous callers (Flask, WSGI, scripts).

Sync code reaches the single asyncio implementation through :class:`BlockingPortal`:
``portal.call(coro_fn, *args)`` runs the coroutine on the portal's loop thread and
blocks for the result.  Never a fresh event loop per request.

The portal is fork-aware: a loop thread does not survive ``fork()``, so a child process
(gunicorn ``--preload`` workers) starts its own thread on first use.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import ParamSpec, TypeVar

__all__ = ["BlockingPortal", "default_portal"]

T = TypeVar("T")
P = ParamSpec("P")


class BlockingPortal:
    """A daemon thread running an event loop, and a way to call coroutines on it."""

    def __init__(self, name: str = "ilp-receiver-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The portal's event loop (started on first use, restarted after fork)."""
        with self._lock:
            if self._loop is None or self._pid != os.getpid() or not self._loop.is_running():
                self._start()
            assert self._loop is not None
            return self._loop

    def _start(self) -> None:
        self._pid = os.getpid()
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            loop.run_forever()

        thread = threading.Thread(target=run, name=self._name, daemon=True)
        thread.start()
        started.wait()
        self._loop, self._thread = loop, thread

    def in_portal_thread(self) -> bool:
        """True when called from the portal's own loop thread."""
        return self._thread is threading.current_thread()

    def submit(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Schedule ``fn(*args, **kwargs)`` on the loop; returns a concurrent Future."""

        async def runner() -> T:
            return await fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(runner(), self.loop)

    def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the loop and block until it returns."""
        if self.in_portal_thread():
            raise RuntimeError("BlockingPortal.call() from the portal thread would deadlock")
        return self.submit(fn, *args, **kwargs).result()

    def stop(self) -> None:
        """Stop the loop thread (it is restarted if the portal is used again)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and self._pid == os.getpid():
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5)


_default: BlockingPortal | None = None
_default_lock = threading.Lock()


def default_portal() -> BlockingPortal:
    """The process-wide portal shared by every sync facade."""
    global _default
    with _default_lock:
        if _default is None:
            _default = BlockingPortal()
        return _default


def _reset_after_fork() -> None:
    global _default, _default_lock
    _default_lock = threading.Lock()
    _default = None


os.register_at_fork(after_in_child=_reset_after_fork)
