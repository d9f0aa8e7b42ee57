"""tb.prefetch: batches converted and moved to a device ahead of the loop.

On a CUDA device a daemon thread ("torchbridge-prefetch") converts each
batch with ``tree_to_tensor(batch, device=...)`` (one coalesced staged
transfer) on a side stream, records an event after it, and hands it over
through a queue of ``depth`` batches. The consumer's current stream waits
on that event before the batch is returned, and every tensor is recorded on
the consuming stream, so the caching allocator never reuses its memory
under a kernel that still reads it. Anywhere else the conversion runs in
the consumer, in order, with nothing ahead (no thread).

``close()``, leaving a ``with`` block, or dropping the iterator stops the
thread (joined), drops what it staged, and closes the source iterator when
it has a ``close()``. The thread never references the iterator object, so
an abandoned one is garbage-collected and shut down (weakref.finalize).
"""

from __future__ import annotations

import atexit
import queue
from contextlib import nullcontext
import threading
import weakref
from typing import Any, Iterable, Iterator, Optional

import torch

from . import _C
from ._tree import _map, tree_to_tensor

_KEYWORDS = ("dtype", "float_dtype", "copy", "pin_memory", "non_blocking",
             "requires_grad")


class _Done:
    """The source is exhausted."""


class _Failure:
    """The source (or a conversion) raised; re-raised at the consumer."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _put(q: queue.Queue, stop: threading.Event, item: Any) -> bool:
    # Poll so that close() is seen while the queue is full.
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _produce(source: Iterator, q: queue.Queue, stop: threading.Event,
             device: torch.device, kw: dict, stream: Any) -> None:
    # stream is None only where no CUDA is involved (the tests drive the
    # thread on the CPU that way).
    try:
        with torch.cuda.stream(stream) if stream is not None else nullcontext():
            while not stop.is_set():
                try:
                    batch = next(source)
                except StopIteration:
                    break
                out = tree_to_tensor(batch, device=device, **kw)
                del batch
                event = None
                if stream is not None:
                    event = torch.cuda.Event()
                    event.record(stream)  # after the batch's copies
                if not _put(q, stop, (out, event)):
                    return
                del out, event
    except BaseException as e:  # noqa: BLE001  (re-raised at the consumer)
        _put(q, stop, _Failure(e))
        return
    _put(q, stop, _Done)


class _State:
    """Everything the thread and the shutdown share (never the iterator)."""

    __slots__ = ("queue", "stop", "thread", "source", "closed")

    def __init__(self, source: Iterator, depth: int) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread: Optional[threading.Thread] = None
        self.source = source
        self.closed = False


def _drain(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


def _shutdown(state: _State, timeout: Optional[float] = None) -> None:
    if state.closed:
        return
    state.closed = True
    state.stop.set()
    t = state.thread
    if t is not None:
        _drain(state.queue)  # frees staged batches; unblocks a full put
        if t is not threading.current_thread():
            t.join(timeout)
        _drain(state.queue)
    close = getattr(state.source, "close", None)
    if callable(close) and (t is None or not t.is_alive()):
        try:
            close()
        except Exception:  # noqa: BLE001  (closing a source is best effort)
            pass
    state.source = None


_live: "weakref.WeakSet[Prefetcher]" = weakref.WeakSet()


@atexit.register
def _close_all_at_exit() -> None:
    # At exit the thread may be waiting on a source that will never deliver
    # (a DataLoader whose workers are being torn down): stop every
    # prefetcher, but wait for each thread only briefly (it is a daemon).
    for p in list(_live):
        _shutdown(p._state, timeout=2.0)


class Prefetcher:
    """The iterator ``tb.prefetch`` returns (see :func:`prefetch`)."""

    def __init__(self, iterable: Iterable, device: torch.device, depth: int,
                 kw: dict, threaded: Optional[bool] = None) -> None:
        self.device = device
        self.depth = depth
        self._kw = kw
        self._state = _State(iter(iterable), depth if depth > 0 else 1)
        cuda = device.type == "cuda"
        self._ahead = (cuda if threaded is None else threaded) and depth > 0
        self._finalizer = weakref.finalize(self, _shutdown, self._state)
        self._finalizer.atexit = False  # _close_all_at_exit, with a bounded wait
        _live.add(self)
        if self._ahead:
            stream = None
            if cuda:
                kw = dict(kw, non_blocking=True)  # the event orders the consumer
                stream = torch.cuda.Stream(device=device)
            t = threading.Thread(
                target=_produce, name="torchbridge-prefetch", daemon=True,
                args=(self._state.source, self._state.queue, self._state.stop,
                      device, kw, stream))
            self._state.thread = t
            t.start()

    def __iter__(self) -> "Prefetcher":
        return self

    def __next__(self) -> Any:
        state = self._state
        if state.closed:
            raise StopIteration
        if not self._ahead:
            try:
                batch = next(state.source)
            except StopIteration:
                self.close()
                raise
            return tree_to_tensor(batch, device=self.device, **self._kw)
        while True:
            try:
                item = state.queue.get(timeout=0.1)
                break
            except queue.Empty:
                if not state.thread.is_alive() and state.queue.empty():
                    self.close()
                    raise StopIteration from None
        if item is _Done:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.exc
        out, event = item
        if event is None:
            return out
        current = torch.cuda.current_stream(self.device)
        current.wait_event(event)

        def record(t):
            if isinstance(t, torch.Tensor) and t.device.type == "cuda":
                t.record_stream(current)
            return t

        _map(record, out)
        return out

    def close(self) -> None:
        """Stop the work ahead (the thread is joined), free what it staged,
        and close the source iterator when it has a ``close()``."""
        self._finalizer()

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def prefetch(iterable: Iterable, device: Any, *, depth: int = 2,
             **to_tensor_kw: Any) -> Prefetcher:
    """Yield ``tree_to_tensor(batch, device=device, **to_tensor_kw)`` for
    each batch of ``iterable`` (a DataLoader, a Ray iterator, any iterable).

    On a CUDA device batches are converted ``depth`` ahead on a background
    thread: each moves as one coalesced staged transfer on a side stream,
    and the consumer's current stream waits on that copy's event before the
    batch is returned (its memory is recorded on the consuming stream).
    Exceptions of the source surface in order, after the batches before
    them. Elsewhere (the CPU) batches convert in order, nothing ahead.
    ``close()`` (or ``with``, or dropping the iterator) stops the work
    ahead and frees what it staged.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(
            f"prefetch: depth must be an int >= 0 (batches converted ahead), "
            f"got {depth!r}.")
    bad = sorted(set(to_tensor_kw) - set(_KEYWORDS))
    if bad:
        raise TypeError(
            f"prefetch: unexpected keyword argument(s) {', '.join(bad)}; it takes "
            f"depth= and to_tensor's keywords ({', '.join(_KEYWORDS)}).")
    if device is None:
        raise ValueError("prefetch: device is required (e.g. 'cuda' or 'cpu').")
    dev = torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    if dev.type == "cuda":
        dev = _C._resolve_device(dev)  # "cuda" -> the current device, fixed now
    return Prefetcher(iterable, dev, depth, to_tensor_kw)
