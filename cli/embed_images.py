"""What ``classify``, ``search`` and ``duplicates`` share: model options and loading, and the image
embeddings of folders kept in an index (``clip_impl.scoring.search_index``).

Index files: ``--index FILE`` keeps every image of the run in FILE. Without it, each folder given has
its own default index under the user cache directory (never inside the image folder), and image files
named one by one go to the index of the folder that holds them. Entries of images that were deleted
from a folder searched now are dropped; other entries stay for later runs.

``--index`` never replaces a file that is not an index of CLIP Suite (told by the file's content, not its
name): a model, notes, an image, a folder, a pipe or a device ends the run with exit code 2 before the
model is loaded, and the file is left as it is. A missing or empty file is created, and an index of ours
that is stale or damaged is rebuilt (a line on stderr says why). An index is only a cache: one that
cannot be read or written (a read-only folder, a full disk, a name too long, no cache folder because
HOME is empty) costs the next run time, not this run's results: they are printed, a ``warning:`` line
on stderr says why, and the exit code stays 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass, field

import torch

from ..clip_impl.scoring import (
    EmbeddingIndex, NotAnIndexError, default_index_path, inspect_target, model_fingerprint, refresh, summary_line,
)
from .images import Progress, collect_images
from .options import add_device_options, positive, resolve_device

MAX_SKIPPED_LINES = 20  # unreadable files listed one by one on stderr, then a count


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--model``, ``--model-2``, ``--batch-size``, ``--precision``, ``--device``."""
    p.add_argument("--model", required=True, help="a full CLIP, or a text encoder (then give --model-2)")
    p.add_argument("--model-2", help="the clip_vision file of the same CLIP as the --model text encoder")
    p.add_argument("--batch-size", type=positive, default=8, metavar="N", help="images per forward pass (default 8)")
    add_device_options(p)


def add_index_options(p: argparse.ArgumentParser) -> None:
    """``--index`` and ``--save-every``."""
    p.add_argument("--index", metavar="FILE",
                   help="index file of image embeddings (default: one per folder under the user cache directory)")
    p.add_argument("--save-every", type=non_negative, default=30.0, metavar="SECONDS",
                   help="while embedding, save the index this often, so an interrupted run keeps its work (default 30)")


@contextlib.contextmanager
def one_thread():
    """Run a tiny job (a text query of a few tokens) on one CPU thread, then restore the count.

    Why: each torch op on a few rows still wakes the whole intra-op thread pool, and on a busy machine every
    wake-up waits for a time slice: one short text query took 2.6-4.6 s on 2 threads and 0.3-0.4 s on 1 with
    the CPUs oversubscribed (on an idle machine both take milliseconds). The CLI owns its process, so
    changing the count for a moment is safe here (never in ``clip_impl``, which runs inside ComfyUI).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def non_negative(value: str) -> float:
    """argparse type: a float of at least 0."""
    x = float(value)
    if not x >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return x


def load_model(args):
    """(model, name) for ``--model``/``--model-2``: a CLIP that can embed images; ValueError otherwise."""
    from ..clip_impl.weights import load_clip
    from ..clip_impl.scoring import scoring_towers

    if args.model_2 and not os.path.exists(args.model_2):
        raise ValueError(f"--model-2 {args.model_2} does not exist")
    files = [args.model] + ([args.model_2] if args.model_2 else [])
    model = load_clip(files, precision=args.precision, device=resolve_device(args.device), with_vision=True)
    scoring_towers(model)  # refuse a model that cannot score before any image is read
    return model, "+".join(os.path.basename(os.path.normpath(f)) for f in files)


def check_out(out: str | None) -> None:
    """ValueError when ``--out``'s folder does not exist (before any work)."""
    if out and out != "-":
        folder = os.path.dirname(os.path.abspath(out))
        if not os.path.isdir(folder):
            raise ValueError(f"--out {out}: the folder {folder} does not exist")


def check_index(args) -> None:
    """ValueError, before any work, when ``--index`` names something that must not be replaced (a folder,
    a pipe or device, a file that is not an index of ours). A file that cannot be read is left to the run
    (a warning, then no index)."""
    if not args.index:
        return
    if os.path.isdir(args.index):
        raise ValueError(f"--index {args.index} is a folder; give the name of the index file to use or create")
    try:
        inspect_target(args.index)
    except NotAnIndexError as e:
        raise ValueError(f"--index {e}") from e
    except OSError:
        pass  # reported once by embed_folders, which then keeps no index


@dataclass
class Group:
    """Images that share one index file; ``folders``/``files`` (absolute) say which entries it owns now.
    ``index_path`` is empty when there is no place for the index (no cache folder): nothing is kept."""

    index_path: str
    paths: list[str] = field(default_factory=list)  # absolute
    members: set = field(default_factory=set)  # the same, for lookups
    folders: list[str] = field(default_factory=list)
    files: set = field(default_factory=set)

    def in_scope(self, path: str) -> bool:
        return path in self.files or any(path.startswith(f.rstrip(os.sep) + os.sep) for f in self.folders)


@dataclass
class Embedded:
    """The images of a run with their embeddings, in the order found, and the ones that failed."""

    paths: list[str]  # as given or found
    embeddings: torch.Tensor  # (N, P) float32, L2-normalised, row i for paths[i]
    failed: list[tuple[str, str]]  # (path as given or found, reason)
    summary: str  # "index: N new, M removed, K reused"


def plan_groups(
    inputs: list[str], index: str | None, notes: list[str] | None = None
) -> tuple[list[Group], dict[str, str]]:
    """(groups, absolute path -> path as given or found) for the command line's images; why an index
    cannot be kept is added to ``notes``."""
    groups: dict[str, Group] = {}
    shown: dict[str, str] = {}
    for given in inputs:
        is_dir = os.path.isdir(given)
        home = given if is_dir else (os.path.dirname(os.path.abspath(given)) or os.sep)
        try:
            target = os.path.abspath(index) if index else str(default_index_path(home))
        except ValueError as e:  # no cache folder: the run goes on without an index
            target = ""
            if notes is not None and str(e) not in notes:
                notes.append(str(e))
        group = groups.setdefault(target, Group(target))
        if is_dir:
            group.folders.append(os.path.abspath(given))
        for path in collect_images([given]):
            absolute = os.path.abspath(path)
            if not is_dir:
                group.files.add(absolute)
            shown.setdefault(absolute, path)  # an image reached twice (a folder and a file in it) is listed once
            if absolute not in group.members:  # each index keeps all of its own images, so none looks deleted
                group.members.add(absolute)
                group.paths.append(absolute)
    return list(groups.values()), shown


def embed_folders(args, model, inputs: list[str], label: str = "indexing") -> Embedded:
    """Embeddings of every image under ``inputs`` through their index files (refreshed and saved).

    Messages about index files that could not be used go to stderr; ValueError when no image is found.
    """
    check_index(args)
    notes: list[str] = []
    groups, shown = plan_groups(inputs, args.index, notes)
    for note in notes:
        print(f"warning: {note}; this run keeps no index (give --index FILE to keep one)", file=sys.stderr)
    total = sum(len(g.paths) for g in groups)  # an image in two groups is counted (and looked up) twice
    if total == 0:
        raise ValueError(f"no .png/.jpg/.jpeg/.webp images in {', '.join(inputs)}")
    fingerprint, dim = model_fingerprint(model), scoring_dim(model)
    progress = Progress(total, label=label)
    counts = {"new": 0, "removed": 0, "reused": 0}
    found: dict[str, torch.Tensor] = {}
    failed: dict[str, str] = {}
    try:
        for group in groups:
            index, problem, keep = _open_index(group.index_path, fingerprint, dim)
            save = _saver(index, group.index_path) if keep else (lambda: None)
            done = refresh(index, model, group.paths, group.in_scope, save, args.batch_size, args.save_every,
                           progress.advance)
            if done.changed or problem or not os.path.exists(group.index_path):
                save()
            for key in counts:
                counts[key] += getattr(done, key)
            found.update(done.embeddings)
            failed.update(done.failed)
    finally:
        progress.close()
    order = list(dict.fromkeys(p for g in groups for p in g.paths if p in found))
    dim = scoring_dim(model)
    embeddings = torch.stack([found[p] for p in order]) if order else torch.zeros(0, dim)
    summary = summary_line(counts["new"], counts["removed"], counts["reused"])
    return Embedded([shown[p] for p in order], embeddings, [(shown[p], r) for p, r in failed.items()], summary)


def _open_index(path: str, fingerprint: str, dim: int):
    """(index, why the stored one is not used, whether to save it). ValueError (the run ends) when the
    file is not an index of ours; a file that cannot be read is reported and left alone."""
    if not path:
        return EmbeddingIndex(fingerprint), None, False
    try:
        index, problem = EmbeddingIndex.open(path, fingerprint, dim)
    except NotAnIndexError as e:
        raise ValueError(f"index {e}") from e  # a default index's place (--index was checked before)
    except OSError as e:
        print(f"warning: cannot read the index {path} ({e.strerror or e}); it is left as it is and this run "
              "keeps no index (give --index FILE in a folder you can read and write)", file=sys.stderr)
        return EmbeddingIndex(fingerprint), None, False
    if problem:
        print(problem, file=sys.stderr)
    return index, problem, True


def _saver(index: EmbeddingIndex, path: str):
    """save() for refresh and the end of the run: a failure is one warning line, never the end of the run."""
    warned = []

    def save() -> None:
        try:
            index.save(path)
        except (OSError, ValueError) as e:  # the results are still good; only the next run pays for it
            if not warned:
                warned.append(path)
                print(f"warning: cannot write the index {path} ({e}); the next run embeds these images again "
                      "(give --index FILE in a folder you can write)", file=sys.stderr)

    return save


def scoring_dim(model) -> int:
    """The size P of the model's image and text embeddings."""
    from ..clip_impl.scoring import scoring_towers

    return scoring_towers(model)[1].config.projection_dim


def report_failed(failed: list[tuple[str, str]], stream=None) -> None:
    """One stderr line per unreadable image (the first MAX_SKIPPED_LINES), then a count."""
    stream = stream or sys.stderr
    for path, reason in failed[:MAX_SKIPPED_LINES]:
        print(f"skipped {path}: {reason}", file=stream)
    if len(failed) > MAX_SKIPPED_LINES:
        print(f"skipped {len(failed) - MAX_SKIPPED_LINES} more unreadable images", file=stream)
