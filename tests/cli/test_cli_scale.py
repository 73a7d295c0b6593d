"""``duplicates`` and ``classify`` at scale, in child processes bounded in time and memory (issue 26, points 5
and 6): 20,000 identical embeddings (200 million pairs) make one group in seconds and bounded memory, in the
usual output; 60,000 labels classify in linear time and memory with a bounded summary line; labels past
the documented limits (a 50 MB label, 200,001 labels, too many templates) are refused before the model
loads, with one short line that names the limit."""

from __future__ import annotations

import csv
import json

import pytest

from helpers import tiny_models as tm
from helpers.bounded import HAS_PROC, describe, run_bounded

pytestmark = pytest.mark.skipif(not HAS_PROC, reason="the time/RSS bounds read /proc (Linux)")

# duplicates on N stand-in embeddings (the index and the model are stubbed: this is the grouping and the
# output), identical ones or K clusters of identical ones.
DUPLICATES = """
import sys, torch
from clip_suite.cli import duplicates, main
from clip_suite.cli.embed_images import Embedded

torch.set_num_threads(1)
n, clusters = int(sys.argv[1]), int(sys.argv[2])
basis = torch.nn.functional.normalize(torch.eye(64)[:clusters] + 0.01, dim=-1)
emb = basis[torch.arange(n) % clusters]
paths = [f"img_{i:05d}.png" for i in range(n)]
duplicates.load_model = lambda args: (None, "stub")
duplicates.embed_folders = lambda args, model, inputs: Embedded(paths, emb, [], f"index: 0 new, 0 removed, {n} reused")
sys.exit(main(["duplicates", "--model", "stub", "--out", sys.argv[3], "folder"]))
"""

CLASSIFY = """
import sys, torch
from clip_suite.cli import main

torch.set_num_threads(1)  # the figures are the code's, not the thread pool's on a shared machine
sys.exit(main(["classify", "--model", sys.argv[1], "--out", sys.argv[2], *sys.argv[3:]]))
"""

# Each case in one process: (exit code, stderr) of classify with these arguments.
REFUSALS = """
import contextlib, io, json, sys
from clip_suite.cli import main

results = []
for extra in json.loads(sys.argv[4]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["classify", "--model", sys.argv[1], "--out", sys.argv[2], *extra, sys.argv[3]])
    results.append((code, err.getvalue()))
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory):
    """A full CLIP with 1-layer, 64-wide towers: the text tower's cost stays small next to what is measured."""
    path = tmp_path_factory.mktemp("small_clip") / "clip.safetensors"
    tm.write_hf_clip(path, tm.text_model(64, 1, projection=32, seed=1), tm.vision_model(64, 1, 8, 32, projection=32, seed=2))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    import numpy as np
    from PIL import Image

    d = tmp_path_factory.mktemp("few_images")
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(d / f"img_{i}.png")
    return d


def test_duplicates_of_20000_identical_embeddings_in_bounded_time_and_memory(tmp_path):
    out = tmp_path / "dups.csv"
    o = run_bounded(DUPLICATES, timeout=40, max_rss_mb=900, args=[20_000, 1, out])
    assert o.ok, describe(o)
    assert o.stderr.strip().splitlines()[-2] == (
        "1 group of near-duplicates (20000 images) among 20000 images at cosine >= 0.95")
    rows = list(csv.reader(out.open(newline="", encoding="utf-8")))
    assert rows[0] == ["group", "size", "path", "cosine"] and len(rows) == 20_001, "one row per image, not per pair"
    assert rows[1] == ["1", "20000", "img_00000.png", "1.000000"] and rows[-1][2] == "img_19999.png"


def test_duplicates_clusters_are_grouped_largest_first(tmp_path):
    out = tmp_path / "dups.csv"
    o = run_bounded(DUPLICATES, timeout=40, max_rss_mb=900, args=[10_001, 7, out])
    assert o.ok, describe(o)
    rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
    sizes = {r["group"]: int(r["size"]) for r in rows}
    assert list(sizes.values()) == [1429] * 5 + [1428] * 2 and len(rows) == 10_001
    first = [r["path"] for r in rows if r["group"] == "1"]
    assert first[:2] == ["img_00000.png", "img_00007.png"], "the group of image 0 first on equal sizes, paths sorted"
    assert "7 groups of near-duplicates (10001 images) among 10001 images" in o.stderr


def test_classify_60000_labels_in_linear_time_and_memory(small_clip, images, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"thing {i} kind {i % 97}" for i in range(60_000)), encoding="utf-8")
    out = tmp_path / "labels.csv"
    o = run_bounded(CLASSIFY, timeout=60, max_rss_mb=650, args=[small_clip, out, "--labels-file", labels, images])
    assert o.ok, describe(o)
    rows = list(csv.DictReader(out.open(newline="", encoding="utf-8")))
    assert len(rows) == 3 and all(r["label"] and len(r["top_k"].split(";")) == 3 for r in rows)
    summary = o.stdout.strip().splitlines()[0]
    assert summary.startswith("classified 3 of 3 images: ") and "more labels (" in summary
    assert len(summary) < 2000, "the summary names the most frequent labels, not all 60,000"


def test_labels_past_the_limits_are_refused_before_any_work(small_clip, images, tmp_path):
    huge = tmp_path / "huge.txt"
    with huge.open("w", encoding="utf-8") as f:  # one 50 MB label between two ordinary ones
        f.write("cat\n")
        for _ in range(50):
            f.write("x" * 1_000_000)
        f.write("\ndog\n")
    long = tmp_path / "long.txt"
    long.write_text("cat\n" + "a very long label " * 300 + "\ndog\n", encoding="utf-8")
    many = tmp_path / "many.txt"
    many.write_text("\n".join(f"l{i}" for i in range(200_001)), encoding="utf-8")
    cases = [
        (["--labels-file", huge], "longer than 16,777,216 characters"),
        (["--labels-file", long], "longer than 1,000 characters (MAX_LABEL_CHARS"),
        (["--labels-file", many], "more than 200,000 labels"),
        (["--labels", "black  cat,Black cat"], "is given twice"),
        (["--labels", "a,b", "--template", " | ".join(["a photo of {}."] * 101)], "more than 100 templates"),
        (["--labels", "a,b", "--template", "{}" * 9], "at most 1,000 characters and 8 {}"),
    ]
    out = tmp_path / "o.csv"
    o = run_bounded(REFUSALS, timeout=30, max_rss_mb=700,
                    args=[small_clip, out, images, json.dumps([[str(a) for a in extra] for extra, _ in cases])])
    assert o.ok, describe(o)
    for (extra, message), (code, err) in zip(cases, json.loads(o.stdout)):
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (extra, err[-600:])
        assert len(lines[0]) < 600, "a label is never echoed whole"
    assert not out.exists(), "refused before any output is written"
