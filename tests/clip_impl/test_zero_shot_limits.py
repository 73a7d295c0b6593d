"""Zero-shot labels and image embeddings at scale (issue 26, point 6): labels that CLIP reads alike are one
label; documented limits refused with a short message; parsing linear on hostile texts; notes bounded;
the top labels found without a Python sort over every label; text and image embeddings kept as rows of
compact tensors, so memory per image or label kept stays small (bounded children)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clip_suite.clip_impl.scoring import MAX_LABEL_CHARS, MAX_LABELS, ZeroShotResult, parse_labels, parse_templates
from clip_suite.clip_impl.scoring.similarity import prepare_prompt, text_embedding, token_embeddings
from clip_suite.clip_impl.scoring.zero_shot import MAX_NOTES, check_sizes, label_embeddings
from clip_suite.clip_impl.weights.loading import load_clip
from helpers.bounded import HAS_PROC, describe, run_bounded
from helpers.vision_fixtures import v336_model, v_model, vg_model, vh_model, vision_dir  # noqa: F401


@pytest.mark.parametrize("text", [
    "black cat\nblack  cat", "black cat\nBlack Cat", "black cat\nblack\tcat", "caf\u00e9\ncafe\u0301", "a b\n A  B ",
])
def test_labels_that_clip_reads_alike_are_given_twice(text):
    with pytest.raises(ValueError, match="is given twice"):
        parse_labels(text)


def test_labels_keep_their_words_with_single_spaces():
    assert parse_labels("black \t cat\n  dog  \n\n", "\n") == ["black cat", "dog"]
    assert parse_labels("red\n fox, blue car", ",") == ["red fox", "blue car"]


def test_limits_are_refused_with_a_short_message():
    with pytest.raises(ValueError, match=f"longer than {MAX_LABEL_CHARS:,} characters") as e:
        parse_labels("cat\n" + "y" * 100_000 + "\ndog")
    assert len(str(e.value)) < 400 and "100,000 characters" in str(e.value)
    with pytest.raises(ValueError, match=f"more than {MAX_LABELS:,} labels"):
        parse_labels("\n".join(map(str, range(MAX_LABELS + 1))))
    with pytest.raises(ValueError, match="is given twice") as e:
        parse_labels("z" * 900 + "\n" + "Z" * 900)
    assert len(str(e.value)) < 400
    with pytest.raises(ValueError, match="MAX_TEXTS"):
        check_sizes([str(i) for i in range(50_000)], ["{}", "a {}", "b {}", "c {}", "d {}"])
    with pytest.raises(ValueError, match="MAX_TEXT_CHARS"):
        check_sizes([f"{i:04d}" + "w" * 990 for i in range(5000)], ["{} {} {} {} {} {} {} {}"])
    with pytest.raises(ValueError, match="more than 100 templates"):
        parse_templates("|".join(["{}"] * 101))
    assert len(parse_templates("|".join([f"{{}} {i}" for i in range(100)]))) == 100


@pytest.mark.skipif(not HAS_PROC, reason="the time/RSS bounds read /proc (Linux)")
def test_label_parsing_is_linear_on_hostile_texts():
    code = """
        from clip_suite.clip_impl.scoring import parse_labels
        n = 16 * 1024 * 1024
        for text in (" " * n, "\\n" * n, " \\n" * (n // 2), "\\t" * (n - 8) + "a\\nb", "a" * (n - 2) + "\\nb", " ," * (n // 2)):
            try:
                parse_labels(text, "," if text.endswith(",") else "\\n")
            except ValueError as e:
                assert len(str(e)) < 400, str(e)[:100]
        print("ok")
    """
    o = run_bounded(code, timeout=20, max_rss_mb=1200)
    assert o.ok and o.stdout.strip() == "ok", describe(o)


def test_top_labels_first_on_ties_and_past_nan():
    probs = torch.tensor([[0.2, 0.3, 0.3, 0.2], [float("nan"), 0.1, 0.9, 0.0]])
    result = ZeroShotResult(list("abcd"), ["{}"], probs, probs, 100.0, "100")
    assert result.top(0, 3) == [("b", pytest.approx(0.3)), ("c", pytest.approx(0.3)), ("a", pytest.approx(0.2))]
    assert [name for name, _ in result.top(0, 10)] == ["b", "c", "a", "d"]
    assert [name for name, _ in result.top(1, 4)] == ["c", "b", "d", "a"]


def test_notes_on_cut_labels_are_bounded(vision_dir):
    model = load_clip(vision_dir / "clip_hf.safetensors")
    labels = [f"{i} " + " ".join(["word"] * 80) for i in range(30)]
    _, notes = label_embeddings(model, labels, ["a photo of {}."], None)
    assert len(notes) == MAX_NOTES + 1 and notes[-1] == "20 more label texts were cut to 75 tokens"


def test_token_embeddings_equal_one_prompt_at_a_time(vision_dir):
    model = load_clip(vision_dir / "clip_hf.safetensors")
    prompts = [prepare_prompt(t, "none") for t in ("a cat", "a dog on a long red bridge at night", "a cat", "fox")]
    rows = token_embeddings(model, [p.ids for p in prompts], None, batch_size=2)
    assert rows.shape == (4, 64) and torch.equal(rows[0], rows[2])
    for row, prompt in zip(rows, prompts):
        assert (row - text_embedding(model, prompt, None)).abs().max().item() < 1e-5


@pytest.mark.skipif(not HAS_PROC, reason="the time/RSS bounds read /proc (Linux)")
def test_image_embeddings_kept_cost_little_memory_each(vision_dir, tmp_path):
    """3,000 embeddings of 64 floats kept from embed_image_files: each used to pin ~25 KB of heap."""
    image = tmp_path / "one.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
    code = """
        import sys, torch
        from clip_suite.clip_impl.weights import load_clip
        from clip_suite.clip_impl.scoring import embed_image_files

        def rss():
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

        torch.set_num_threads(1)
        model = load_clip([sys.argv[1]], with_vision=True)
        for _ in embed_image_files(model, [sys.argv[2]] * 64, 8, 0):
            pass
        before, kept = rss(), []
        for batch in embed_image_files(model, [sys.argv[2]] * 3000, 8, 0):
            kept += [item.embedding for item in batch]
        print((rss() - before) / len(kept))
    """
    o = run_bounded(code, timeout=90, max_rss_mb=1200, args=[vision_dir / "clip_hf.safetensors", image])
    assert o.ok, describe(o)
    assert float(o.stdout) < 8, f"{float(o.stdout):.1f} KB of memory per image embedding kept"
