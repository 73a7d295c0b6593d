"""Decode and preprocess image files in worker processes, ahead of the model, results in order.

Scoring a folder spends its time in three places: decoding (pillow), resizing to the model's size (torch,
``clip_impl.images.preprocess``) and the vision tower. The first two run here in a pool of worker processes,
each single-threaded, while the caller runs the model on the images already loaded: decoding overlaps
inference instead of alternating with it. The pixels are exactly those of ``preprocess_images(
image_to_tensor(open_image(path)), size)``: the library's own preprocessing, only elsewhere.

    with ImageLoader(workers=1) as loader:           # workers start now (e.g. while a model loads)
        for item in loader.load(paths, size=224):    # LoadedImage, in the order of paths
            item.index, item.path, item.pixels (3, S, S) float32 or None, item.error, item.extra

``fit="pad"`` gives HPS v2's letterboxed pixels instead of CLIP's centre crop (``clip_impl.images.letterbox``).
``workers=0`` loads in the calling process (no pool). ``read_extra`` (a module-level function, so worker
processes can import it) runs on each opened pillow image before it is converted, e.g. to read the prompt
from its metadata; its return value comes back as ``item.extra`` and must not raise for ordinary bad input.
Workers are started with ``spawn`` (never ``fork``: the parent may already run torch threads), and they exit
with their parent, even one killed with SIGKILL (which runs no cleanup): on Linux the kernel kills them
(``PR_SET_PDEATHSIG``), and everywhere a watchdog thread in each worker ends it within a second of its
parent's end (the pipe multiprocessing keeps from the parent reaches end of file, or the parent id changes).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from .letterbox import Fit, letterbox_images
from .preprocess import image_to_tensor, open_image, preprocess_images


@dataclass
class LoadedImage:
    """One image file, loaded: CLIP pixels (3, S, S) float32 or the reason it has none."""

    index: int  # position in the list of paths given to ``load``
    path: str
    pixels: torch.Tensor | None
    error: str = ""  # empty on success; otherwise one line, without the path
    extra: object = None  # what ``read_extra`` returned (None when not given or the image failed to open)
    notes: tuple[str, ...] = ()  # what loading did on the way (decoded at reduced size, 32-bit values scaled)


log = logging.getLogger(__name__)
MAX_RESTARTS = 3  # pools that die more often than this are given up (see ImageLoader.load)
MIN_IMAGES_FOR_WORKERS = 16  # fewer images load faster in-process than a worker takes to start
PARENT_CHECK_SECONDS = 0.5  # how often a worker's watchdog looks for its parent (the portable fallback)
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def default_workers(images: int | None = None) -> int:
    """Worker processes for this machine: one core stays with the model (at least 1, at most 4); none for
    fewer than MIN_IMAGES_FOR_WORKERS images."""
    if images is not None and images < MIN_IMAGES_FOR_WORKERS:
        return 0
    return max(1, min(4, (os.cpu_count() or 1) - 1))


def _init_worker(parent: int | None = None, deathsig: bool = False) -> None:
    """Worker set-up: one torch thread, and exit with the parent process ``parent`` (see the module doc)."""
    # One thread per worker: the workers share the cores with the model, which uses torch's own threads.
    torch.set_num_threads(1)
    if parent is not None:
        exit_with_parent(parent, deathsig)


def exit_with_parent(parent: int, deathsig: bool = True) -> None:
    """Make this process end when ``parent`` (its parent's pid) ends, however that ends.

    ``deathsig``: also ask Linux to SIGKILL it then (``PR_SET_PDEATHSIG``; it fires when the parent *thread*
    that started this process ends, so only ask when that is the parent's main thread). Everywhere, a daemon
    thread waits on multiprocessing's pipe from the parent (end of file when the parent is gone) and checks
    ``os.getppid()`` (which changes when an orphan is adopted) every PARENT_CHECK_SECONDS.
    """
    if deathsig and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # no prctl here: the watchdog below still ends this process
            pass
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)
    sentinel = getattr(multiprocessing.parent_process(), "sentinel", None)
    threading.Thread(target=_watch_parent, args=(parent, sentinel), name="clip-suite-parent-watch",
                     daemon=True).start()


def _watch_parent(parent: int, sentinel) -> None:
    while True:
        if sentinel is not None:
            try:
                gone = bool(multiprocessing.connection.wait([sentinel], timeout=PARENT_CHECK_SECONDS))
            except OSError:  # the handle itself is gone: so is the parent's end of it
                gone = True
        else:
            time.sleep(PARENT_CHECK_SECONDS)
            gone = False
        if gone or os.getppid() != parent:
            os._exit(1)  # no cleanup to run: the results have nobody to go to


def _warm_up() -> bool:
    """A no-op task: starting a worker (imports) overlaps whatever the caller does next."""
    return True


def load_one(index: int, path: str, size: int, read_extra: Callable | None = None, fit: Fit = "crop") -> tuple:
    """(index, pixels as a numpy array (3, S, S) or None, error, extra, notes) for one file; never raises for
    a bad image (pillow raises many exception types on malformed files: each becomes that image's error).
    ``fit``: "crop" (CLIP's centre crop, ``preprocess_images``) or "pad" (HPS v2's, ``letterbox_images``)."""
    extra, notes = None, []
    try:
        img = open_image(path, notes)
        try:
            if read_extra is not None:
                extra = read_extra(img)
            tensor = image_to_tensor(img, notes)
            pixels = (letterbox_images if fit == "pad" else preprocess_images)(tensor, size)[0]
        finally:
            img.close()
    except Exception as e:  # noqa: BLE001
        reason = str(e) if isinstance(e, ValueError) else f"cannot read the image ({type(e).__name__}: {e})"
        return index, None, reason.replace(f"{path}: ", "", 1), extra, tuple(notes)
    # numpy, not torch: a plain pickle through the pipe (torch would pass shared-memory file handles).
    return index, pixels.numpy(), "", extra, tuple(notes)


class ImageLoader:
    """A pool of worker processes that load images ahead of the caller (see the module docstring)."""

    def __init__(self, workers: int | None = None, prefetch: int | None = None):
        self.workers = default_workers() if workers is None else workers
        if self.workers < 0:
            raise ValueError(f"workers={self.workers}; use 0 (load in this process) or more")
        self.prefetch = prefetch or max(8, 4 * self.workers)
        self._pool = None
        if self.workers > 0:
            self._start()

    def _start(self) -> None:
        # The workers are started by this thread (submit starts them): Linux's parent-death signal follows
        # the starting thread, so it is asked for only when that is the main thread (see exit_with_parent).
        main = threading.current_thread() is threading.main_thread()
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
            initargs=(os.getpid(), main),
        )
        for _ in range(self.workers):
            self._pool.submit(_warm_up)

    def load(
        self, paths: list[str], size: int, read_extra: Callable | None = None, fit: Fit = "crop"
    ) -> Iterator[LoadedImage]:
        """Each of ``paths`` as a :class:`LoadedImage`, in order; at most ``prefetch`` images are in flight."""
        if self._pool is None:
            for i, path in enumerate(paths):
                yield _loaded(path, load_one(i, path, size, read_extra, fit))
            return
        pending: deque = deque()  # (index, path, future), in order
        following = iter(enumerate(paths))
        restarts = 0

        def submit(index: int, path: str) -> None:
            pending.append((index, path, self._pool.submit(load_one, index, path, size, read_extra, fit)))

        for index, path in following:
            submit(index, path)
            if len(pending) >= self.prefetch:
                break
        while pending:
            index, path, future = pending.popleft()
            nxt = next(following, None)
            if nxt is not None:
                submit(*nxt)
            try:
                result = future.result()
            except BrokenProcessPool:
                # A worker died (killed for memory by a huge image, say): this image gets the error, the
                # pool starts again and the images still pending are loaded anew. A pool that keeps dying
                # (workers that cannot even start) is given up for loading in this process.
                result = (index, None, "the process loading this image died (out of memory?)", None, ())
                self._pool.shutdown(wait=False, cancel_futures=True)
                restarts += 1
                again = [(i, p) for i, p, _ in pending] + list(following)
                pending.clear()
                if restarts > MAX_RESTARTS:
                    log.warning("image loader workers keep dying; loading the remaining images in this process")
                    self._pool = None
                    yield _loaded(path, result)
                    for i, p in again:
                        yield _loaded(p, load_one(i, p, size, read_extra, fit))
                    return
                self._start()
                following = iter(again)
                for i, p in following:
                    submit(i, p)
                    if len(pending) >= self.prefetch:
                        break
            yield _loaded(path, result)

    def close(self, wait: bool = True) -> None:
        """Stop the workers (``wait=False``: without waiting for the ones still starting)."""
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "ImageLoader":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(wait=exc_type is None)


def _loaded(path: str, result: tuple) -> LoadedImage:
    index, pixels, error, extra, notes = result
    return LoadedImage(index, path, None if pixels is None else torch.from_numpy(pixels), error, extra, notes)


def load_images(paths: list[str], size: int, workers: int | None = None, read_extra: Callable | None = None):
    """Every image of ``paths`` as a :class:`LoadedImage`, in order (a pool for the duration of the loop)."""
    with ImageLoader(workers) as loader:
        yield from loader.load(paths, size, read_extra)
