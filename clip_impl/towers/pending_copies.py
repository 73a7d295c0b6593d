"""A loaded tower's block matrices start as the file's own tensors and become its own memory in the
background.

A loader checks the encoder blocks' matrices for NaN/inf, leaves them as the file's memory-mapped tensors
(e.g. fp16) and returns: loading costs little more than reading those bytes once. A background thread then
copies them into the storage dtype (fp32 on the CPU: no cast per layer and pass) while the caller goes on
(in ComfyUI, with the next nodes). A tower's next pass first finishes what is left (taking turns with the
thread): computing beside the copies oversubscribes a small machine's cores (each torch op waits for its
whole thread team: the first encode took 2.7 s instead of 2.1 s on 2 cores). Only exact conversions are
deferred (the same dtype, or fp16/bf16 widened to fp32) and every layer casts its weights per use, so a
tower computes the same numbers whatever is copied.

A copy replaces the module's Parameter object rather than its data, so a thread still reading the old
tensor keeps valid memory. A LoRA patch and a host about to move the tower (ComfyUI moves it submodule by
submodule) first finish the copies; a move of the whole tower holds :meth:`PendingCopies.hold`, and a
parameter moved meanwhile (new data) is never copied. Until its copies are made the file stays mapped.
"""

from __future__ import annotations

import atexit
import contextlib
import threading

import torch
from torch import nn

_STOP = threading.Event()
_THREADS: set[threading.Thread] = set()
_THREADS_LOCK = threading.Lock()


@atexit.register
def _stop_background_copies() -> None:
    """At interpreter exit, let each background copy finish its current tensor and stop: a torch op cut
    off at exit aborts the process, and waiting for every copy would delay the exit of a one-shot run."""
    _STOP.set()
    with _THREADS_LOCK:
        threads = list(_THREADS)
    for thread in threads:
        thread.join()


class PendingCopies:
    """The parameters of one tower still to be copied into its own memory (see the module docstring)."""

    def __init__(self, tower: nn.Module | None = None, storage: dict[str, torch.dtype] | None = None):
        """``storage``: parameter name in ``tower`` -> the dtype of its own copy (none pending without
        a tower)."""
        self.storage = dict(storage or {})  # kept after settling: a tower's final dtypes
        # (module, attribute, the tensor it was loaded with, its data pointer, dtype); no ref to the tower
        self._entries = []
        for name, dtype in self.storage.items() if tower is not None else ():
            path, _, attr = name.rpartition(".")
            module = tower.get_submodule(path)
            loaded = getattr(module, attr)
            self._entries.append((module, attr, loaded, loaded.data_ptr(), dtype))
        self._lock = threading.RLock()  # re-entrant: a settle inside a hold() of the same thread proceeds
        self._started = False

    def __len__(self) -> int:
        return len(self._entries)

    def __deepcopy__(self, memo) -> "PendingCopies":
        """A deep copy of a tower keeps its copies pending (its modules and parameters, copied before
        this attribute, are found in ``memo``); a copy of this object alone has none."""
        copy = PendingCopies(storage=self.storage)
        for module, attr, loaded, _, dtype in list(self._entries):
            if id(module) in memo and id(loaded) in memo:
                twin = memo[id(loaded)]
                copy._entries.append((memo[id(module)], attr, twin, twin.data_ptr(), dtype))
        return copy

    def __getstate__(self) -> dict:
        self.settle()  # a pickled tower holds its own memory
        return {"storage": self.storage}

    def __setstate__(self, state: dict) -> None:
        self.__init__(storage=state["storage"])

    def final_nbytes(self, tower: nn.Module) -> int:
        """Bytes of ``tower``'s parameters and buffers once settled (a host counts a tower at its final
        size while its copies may still be pending)."""
        state = tower.state_dict(keep_vars=True)
        return sum(t.numel() * self.storage.get(name, t.dtype).itemsize for name, t in state.items())

    def settle(self, background: bool = False) -> None:
        """Make every pending copy now (taking turns with a background copy under way, a tensor at a
        time). ``background``: stop when the interpreter exits."""
        while self._entries:
            with self._lock:
                if not self._entries or (background and _STOP.is_set()):
                    return
                module, attr, loaded, pointer, dtype = self._entries[-1]
                if getattr(module, attr) is loaded and loaded.data_ptr() == pointer:
                    with torch.inference_mode(False):  # a plain tensor, as loading makes, even in a pass
                        own = torch.empty(loaded.shape, dtype=dtype, device=loaded.device)
                        own.copy_(loaded.detach())
                    setattr(module, attr, nn.Parameter(own, requires_grad=False))
                self._entries.pop()

    def start(self) -> None:
        """Make the copies on a background thread (once; a loader calls this when its towers are built)."""
        if not self._entries:
            return
        with self._lock:
            if self._started:
                return
            self._started = True
        thread = threading.Thread(target=self._settle_in_background, name="clip-suite-copies", daemon=True)
        with _THREADS_LOCK:
            _THREADS.add(thread)
        thread.start()

    def _settle_in_background(self) -> None:
        try:
            self.settle(background=True)
        finally:
            with _THREADS_LOCK:
                _THREADS.discard(threading.current_thread())

    @contextlib.contextmanager
    def hold(self):
        """No copy is made while this is held (a host moving the tower holds it around the move)."""
        with self._lock:
            yield
