"""Aesthetic heads for the nodes: files from the ``aesthetic`` model folder, loaded once (reloaded when the file
changes), and scoring on the host. Shared by ``ClipSuiteAestheticScore`` and Keep Best (``aesthetic_head``).
"""

from __future__ import annotations

import os
import threading

from ..clip_impl.scoring import AestheticHead, AestheticResult, aesthetic_scores, load_head
from . import host

_HEADS: dict[str, tuple[tuple, AestheticHead]] = {}  # path -> ((mtime, size), head)
_HEADS_LOCK = threading.Lock()
_MAX_HEADS = 8

HEAD_TOOLTIP = (
    f"A LAION aesthetic predictor head from the {host.AESTHETIC_DIR} folder (.pth, .pt or .safetensors): v1 "
    "sa_0_4_vit_{b_32,l_14}_linear.pth (one linear layer) or v2 sac+logos+ava1-l14-linearMSE.pth (MLP). "
    "Scores are about 1..10 (higher = people like it more), on the normalised CLIP image embedding. A head file "
    "is at most 64 MiB, 4 M float values, 4096 wide (the published ones are 3 KB and 3.7 MB); a file claiming more "
    "is refused before it is read."
)


def head_for(name: str) -> AestheticHead:
    """The head file ``name`` from the aesthetic folder, loaded once and reloaded when the file changes."""
    path = host.aesthetic_head_path(name)
    stat = os.stat(path)
    key = (stat.st_mtime_ns, stat.st_size)
    with _HEADS_LOCK:
        entry = _HEADS.get(path)
        if entry is not None and entry[0] == key:
            return entry[1]
    head = load_head(path)
    with _HEADS_LOCK:
        _HEADS[path] = (key, head)
        while len(_HEADS) > _MAX_HEADS:
            _HEADS.pop(next(iter(_HEADS)))
    return head


def run_aesthetic(hosted: host.HostedClip, images, head_name: str, keep_not_finite: bool = False) -> AestheticResult:
    """Score every image of ``images`` with the head ``head_name`` on the host (vision tower loaded first).
    A score that is NaN or infinite is an error naming the images and why, unless ``keep_not_finite`` (Keep
    Best, which leaves those images out and says so); with no finite score at all it is an error anyway."""
    head = head_for(head_name)
    host.get_host().prepare(hosted, parts=("vision",))
    result = aesthetic_scores(hosted.model, head, images)
    refuse_not_finite(result, "aesthetic score", keep_not_finite)
    return result


def refuse_not_finite(result, what: str, keep_some: bool = False) -> None:
    """ValueError naming the images whose score is NaN or infinite and why (the first reason); with
    ``keep_some``, only when no image has a finite score."""
    bad = sorted(result.invalid)
    if not bad or (keep_some and len(bad) < len(result.scores)):
        return
    n = len(result.scores)
    first = bad[0]
    raise ValueError(
        f"the model gave a NaN or infinite {what} for image{'s' if len(bad) > 1 else ''} "
        f"{', '.join(map(str, bad[:8]))}{', ...' if len(bad) > 8 else ''} of {n}; #{first}: {result.invalid[first]}"
    )


def head_choices() -> list[str]:
    """The head files for a combo input (ComfyUI needs at least one entry to show the widget)."""
    return host.aesthetic_heads() or [f"(no files in {host.AESTHETIC_DIR})"]
