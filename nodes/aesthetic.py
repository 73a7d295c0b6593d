"""``ClipSuiteAestheticScore``: LAION aesthetic scores of an IMAGE batch (no prompt). Head files, their loading
and scoring on the host live in ``aesthetic_heads.py``, which Keep Best shares when it ranks by a head.

The head (``clip_impl.scoring.aesthetic``: v1 linear or v2 MLP) reads the L2-normalised image embedding of the
CLIP on the ``clip`` input; its width must match (ViT-L/14 for v2). Head files come from the ``aesthetic``
model folder (``host.aesthetic_heads``); a loaded head is kept until its file changes.
"""

from __future__ import annotations

from . import common, host
from .aesthetic_heads import HEAD_TOOLTIP, head_choices, run_aesthetic
from .similarity import IMAGES_TOOLTIP, scoring_clip

AESTHETIC_CLIP_TOOLTIP = (
    "A CLIP with a vision tower, from 'Load CLIP (CLIP Suite)': the CLIP the head was trained on. v2 "
    "(sac+logos+ava1-l14-linearMSE) and v1 *_vit_l_14_*: OpenAI CLIP ViT-L/14 (a full CLIP file, or clip_l + the "
    "ViT-L/14 clip_vision file); v1 *_vit_b_32_*: ViT-B/32. A head of another width is refused, naming both."
)


class ClipSuiteAestheticScore:
    """Aesthetic Score (CLIP): a LAION aesthetic predictor's score for every image of a batch."""

    DESCRIPTION = (
        "Scores every image of a batch with a LAION aesthetic predictor (no prompt): a small head on the "
        "normalised CLIP image embedding, trained on human ratings (about 1..10). v1 heads are one linear layer "
        f"(ViT-B/32 or ViT-L/14), the improved v2 head an MLP on ViT-L/14. Put the head files in {host.AESTHETIC_DIR}. "
        "'scores' is a list output, one FLOAT per image in batch order, like the similarity node's."
    )
    CATEGORY = common.CATEGORY
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS, OUTPUT_IS_LIST = common.declare_outputs(
        *common.batch_score_outputs(
            "aesthetic score", best="the highest score", report="A report: head, model, summary and each image's score."
        )
    )
    FUNCTION = "score"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": (common.CLIP_TYPES, {"tooltip": AESTHETIC_CLIP_TOOLTIP}),
                "images": ("IMAGE", {"tooltip": IMAGES_TOOLTIP}),
                "head": (head_choices(), {"tooltip": HEAD_TOOLTIP}),
            }
        }

    def score(self, clip, images, head):
        result = run_aesthetic(scoring_clip(clip), images, head)
        report = result.report
        return {
            "ui": {"text": [report], "scores": list(result.scores)},
            "result": (list(result.scores), result.mean, result.best_index, report),
        }
