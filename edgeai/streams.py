"""A generation running on a thread, read as an iterator of text pieces (``generate(stream=True)``)."""

from __future__ import annotations

import atexit
import queue
import threading
from typing import Any, Callable, Iterator


def stream_pieces(run: Callable[[Callable[[str], None]], Any], cancel: threading.Event,
                  dropped: threading.Event) -> Iterator[str]:
    """Run ``run(on_text)`` on a thread and yield its pieces as they come; ``run`` stops at its next
    step once ``cancel`` (the caller's) or ``dropped`` is set. A reader that stops early (break,
    Ctrl-C, a closed pipe) sets ``dropped``, not the caller's event, and waits for the step under
    way: a thread still inside ONNX Runtime when the interpreter exits aborts the process (134)."""

    # A short queue: the loop runs at most a piece ahead of the reader, so a cancel lands within
    # a step of what the reader has seen; a reader that is gone (dropped) is not waited for.
    q: queue.Queue = queue.Queue(maxsize=1)
    done = object()
    error: list[BaseException] = []

    def put(item: Any) -> None:
        while not dropped.is_set():
            try:
                return q.put(item, timeout=0.05)
            except queue.Full:
                pass

    def work() -> None:
        try:
            run(put)
        except BaseException as e:  # handed to the consumer, raised there
            error.append(e)
        finally:
            put(done)

    t = threading.Thread(target=work, name="edgeai-generate", daemon=True)
    _live[t] = dropped
    try:
        t.start()
        while True:
            try:
                piece = q.get(timeout=0.1)
            except queue.Empty:  # a worker dropped by Pipeline.close hands over no `done`
                if t.is_alive():
                    continue
                break
            if piece is done:
                break
            if not (cancel.is_set() or dropped.is_set()):  # cancelled: not even pieces already made
                yield piece
    except BaseException:
        dropped.set()
        raise
    finally:
        if t.ident is not None and t is not threading.current_thread():  # started; not collected on its own worker
            t.join()
            _live.pop(t, None)
    if error:
        raise error[0]


# Streams running: at exit, those nobody closed are dropped and waited for (see stream_pieces).
_live: dict[threading.Thread, threading.Event] = {}


@atexit.register
def _drop_streams() -> None:
    for t, dropped in list(_live.items()):
        dropped.set()
        if t.ident is not None:
            t.join(timeout=30)
