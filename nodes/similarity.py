"""``ClipSuiteImageTextSimilarity`` and ``ClipSuiteSelectBest``: CLIP scores of an IMAGE batch against a prompt.

Both nodes score every image of the batch with ``clip_impl.scoring.similarity.score_images`` (DESIGN 7) on a CLIP
that has a vision tower; the host loads the vision tower and the text tower paired with it first. Text
embeddings are cached per prompt by ``clip_impl.scoring.similarity``. The per-image scores are shown on the node
(``ui["scores"]``: a flat list of floats, read by the web extension) and returned as a list output
(``OUTPUT_IS_LIST``), one FLOAT per image.
"""

from __future__ import annotations

import math

import torch

from ..clip_impl.scoring import SCALES, AestheticResult, SimilarityResult, score_images, scoring_towers
from . import common, host
from .aesthetic_heads import head_choices, refuse_not_finite, run_aesthetic

MAX_TOP_K = 4096  # EmptyImage's largest batch
MIN_SCORE_RANGE = (-1.0, 100.0)  # cosine's lowest value .. clipscore_100's highest

SCORING_CLIP_TOOLTIP = (
    "A CLIP with a vision tower, from 'Load CLIP (CLIP Suite)': a full CLIP model file, or a text encoder with "
    "the clip_vision file of the same CLIP as model_2 (clip_l + ViT-L/14, SD2's OpenCLIP-H + ViT-H/14, SDXL's "
    "clip_g or checkpoint + ViT-bigG/14). ComfyUI's own CLIP (Load Checkpoint, Load CLIP) has no vision tower "
    "and is refused with this advice."
)
IMAGES_TOOLTIP = (
    "The images to score (ComfyUI IMAGE, values 0..1): every image of the batch is scored. RGBA drops alpha, "
    "greyscale is used as RGB; NaN values or a tensor in another range (0..255, -1..1) are refused."
)
TEXT_TOOLTIP = (
    "The prompt to score against. Scored as the words you meant: weighting syntax (word:1.2), BREAK and "
    "embedding: references are removed, and it is cut to CLIP's 75 tokens (the report says when)."
)
SCALE_TOOLTIP = (
    "Score units (cos = cosine similarity of the image and text embeddings).\n"
    "clipscore_100: max(100*cos, 0), torchmetrics' CLIPScore (0..100), here per image instead of its batch mean.\n"
    "clipscore_2_5: 2.5*max(cos, 0), CLIP-S of the CLIPScore paper (Hessel et al. 2021); w = 2.5 stretches "
    "typical cosines to about 0..1. clipscore_2_5 = clipscore_100 / 40.\n"
    "cosine: the raw cosine, -1..1, not clamped (ranks images that all score 0 on the clamped scales); HPS v2's "
    "score with an HPS v2/v2.1 checkpoint.\n"
    "logit: the model's own logit, exp(logit_scale)*cos (PickScore's score with PickScore_v1; transformers' "
    "logits_per_image); the report adds the softmax over the batch, PickScore's probability of each image being "
    "picked. A text encoder + clip_vision pair has no logit_scale: 100 is used (the report says so)."
)
TOP_K_TOOLTIP = "How many images to keep at most: the best ones, best first. More than the batch keeps them all."
MIN_SCORE_TOOLTIP = (
    "Keep only images scoring at least this, in the units of scale (clipscore_100: 0..100, clipscore_2_5: "
    "0..2.5, cosine: -1..1, logit: about 0..100; with an aesthetic_head: the head's score, about 1..10). 0 keeps "
    "every image on the clamped scales. When no image reaches it, nothing is passed on: the nodes fed by this "
    "node's outputs are skipped (e.g. no Save Image), without an error. An image whose score is NaN or infinite "
    "is never kept (the report says why); min_score itself must be a finite number."
)
AESTHETIC_HEAD_TOOLTIP = (
    f"none (default): rank by the CLIP score of text on scale. A head file from {host.AESTHETIC_DIR} (LAION "
    "aesthetic predictor v1/v2): rank by its aesthetic score instead (no prompt: text and scale are not used; "
    "min_score is in the head's units, about 1..10). The clip must be the CLIP the head was trained on "
    "(ViT-L/14 for v2)."
)
NATIVE_CLIP_MESSAGE = (
    "clip input: ComfyUI's own CLIP (from Load Checkpoint, Load CLIP or DualCLIPLoader) holds only text "
    "encoders, no vision tower, so it cannot score images. Load the model with 'Load CLIP (CLIP Suite)' instead: "
    "model = the text encoder (e.g. text_encoders/clip_l, or clip_g / the SDXL checkpoint) and model_2 = the "
    "clip_vision file of the same CLIP (ViT-L/14 for clip_l, ViT-bigG/14 for clip_g), or model = a full CLIP "
    "model file"
)


def scoring_clip(clip) -> host.HostedClip:
    """Our model for a scoring node's ``clip`` input, refusing models without a vision tower (with advice)."""
    h = host.get_host()
    if not isinstance(clip, host.HostedClip) and hasattr(clip, "cond_stage_model"):
        raise ValueError(NATIVE_CLIP_MESSAGE)  # before converting its text towers for nothing
    hosted = h.clip_for(clip)
    if hosted.model.vision is None:
        sources = ", ".join(hosted.model.sources) or "the model"
        raise ValueError(
            f"clip input: {sources} has no vision tower, so it cannot score images. In 'Load CLIP (CLIP Suite)' "
            "set model_2 to the clip_vision file of the same CLIP (ViT-L/14 for clip_l, ViT-H/14 for SD2's "
            "OpenCLIP-H, ViT-bigG/14 for clip_g), or load a full CLIP model file"
        )
    return hosted


def run_scoring(clip, images, text: str, scale: str, keep_not_finite: bool = False) -> SimilarityResult:
    """Score every image of ``images`` against ``text`` on the host (towers loaded first). Inputs are
    checked, so a NaN or infinite score is the model's (e.g. fp16 overflow): an error naming the images and
    why, never a score passed on; with ``keep_not_finite`` (Keep Best) only when no score is finite."""
    h = host.get_host()
    hosted = scoring_clip(clip)
    model = hosted.model
    text_tower, _ = scoring_towers(model)
    role = next(r for r, t in model.towers.items() if t is text_tower)
    h.prepare(hosted, parts=("vision", role))
    result = score_images(model, images, text, scale)
    refuse_not_finite(result, "score", keep_not_finite)
    return result


def ranking(result: SimilarityResult | AestheticResult) -> list[int]:
    """Batch indexes best first: by cosine (so images tied at a clamped 0 still rank; an aesthetic score has
    no clamp: by score), then batch order. Images whose score is not finite are left out."""
    values = result.cosines if isinstance(result, SimilarityResult) else result.scores
    return sorted(result.finite, key=lambda i: (-values[i], i))


class ClipSuiteImageTextSimilarity:
    """Image-Text Similarity (CLIP score): one score per image of a batch, against one prompt."""

    DESCRIPTION = (
        "Scores every image of a batch against a prompt with a CLIP model (CLIPScore): the cosine similarity "
        "of the image and text embeddings, on the chosen scale. Needs a CLIP with a vision tower (see the clip "
        "input). Shows each image's score on the node; 'scores' is a list output, one FLOAT per image in batch "
        "order, so a node fed by it runs once per image."
    )
    CATEGORY = common.CATEGORY
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS, OUTPUT_IS_LIST = common.declare_outputs(
        *common.batch_score_outputs(
            "score", best="the best image: highest cosine",
            report="A report: prompt as scored, summary, each image's score and cosine, notes (e.g. truncation).",
        )
    )
    FUNCTION = "score"
    OUTPUT_NODE = True  # shows the scores even when nothing takes its outputs

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": (common.CLIP_TYPES, {"tooltip": SCORING_CLIP_TOOLTIP}),
                "images": ("IMAGE", {"tooltip": IMAGES_TOOLTIP}),
                "text": ("STRING", {"multiline": True, "dynamicPrompts": False, "tooltip": TEXT_TOOLTIP}),
                "scale": (list(SCALES), {"default": "clipscore_100", "tooltip": SCALE_TOOLTIP}),
            }
        }

    def score(self, clip, images, text, scale):
        result = run_scoring(clip, images, text, scale)
        report = result.report
        return {
            "ui": {"text": [report], "scores": list(result.scores)},
            "result": (list(result.scores), result.mean, result.best_index, report),
        }


class ClipSuiteSelectBest:
    """Keep Best Images (CLIP score): the top_k images of a batch that reach min_score, best first."""

    DESCRIPTION = (
        "Scores every image of a batch against a prompt (as 'Image-Text Similarity') and passes on the top_k "
        "best that reach min_score, best first, as one batch. When no image reaches min_score, nothing is passed "
        "on: ComfyUI skips the nodes fed by 'images' and 'scores' (so a Save Image after it saves nothing) and "
        "the run ends without an error; the report on the node says so. An IMAGE batch cannot be empty, and "
        "passing the best image anyway would ignore min_score. 'scores' is a list output like the similarity "
        "node's: the kept images' scores, best first. With an aesthetic_head it ranks by the LAION aesthetic "
        "score instead of the prompt."
    )
    CATEGORY = common.CATEGORY
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS, OUTPUT_IS_LIST = common.declare_outputs(
        common.Output("IMAGE", "images",
                      "The kept images as one batch, best first (skipped downstream when none reaches min_score)."),
        common.scores_output("The kept images' scores, best first (a list, one FLOAT per kept image)."),
    )
    FUNCTION = "select"
    OUTPUT_NODE = True  # shows which images it keeps even when nothing takes its outputs

    @classmethod
    def INPUT_TYPES(cls):
        low, high = MIN_SCORE_RANGE
        return {
            "required": {
                "clip": (common.CLIP_TYPES, {"tooltip": SCORING_CLIP_TOOLTIP}),
                "images": ("IMAGE", {"tooltip": IMAGES_TOOLTIP}),
                "text": ("STRING", {"multiline": True, "dynamicPrompts": False, "tooltip": TEXT_TOOLTIP}),
                "top_k": ("INT", {"default": 1, "min": 1, "max": MAX_TOP_K, "step": 1, "tooltip": TOP_K_TOOLTIP}),
                "min_score": (
                    "FLOAT",
                    {"default": 0.0, "min": low, "max": high, "step": 0.001, "tooltip": MIN_SCORE_TOOLTIP},
                ),
                "scale": (list(SCALES), {"default": "clipscore_100", "tooltip": SCALE_TOOLTIP}),
            },
            "optional": {
                "aesthetic_head": (
                    [common.NO_FILE] + head_choices(), {"default": common.NO_FILE, "tooltip": AESTHETIC_HEAD_TOOLTIP}
                ),
            },
        }

    def select(self, clip, images, text, top_k, min_score, scale, aesthetic_head=common.NO_FILE):
        if top_k < 1:
            raise ValueError(f"top_k={top_k}; keep at least 1 image")
        if not math.isfinite(min_score):  # a linked value is not range-checked; nothing compares with NaN
            raise ValueError(f"min_score is {min_score}; give a finite number in the units of scale (see its tooltip)")
        if aesthetic_head and aesthetic_head != common.NO_FILE:
            result = run_aesthetic(scoring_clip(clip), images, aesthetic_head, keep_not_finite=True)
        else:
            result = run_scoring(clip, images, text, scale, keep_not_finite=True)
        kept = [i for i in ranking(result) if result.scores[i] >= min_score][:top_k]
        report = select_report(result, kept, top_k, min_score)
        scores = [result.scores[i] for i in kept]
        h = host.get_host()
        if not kept:
            blocked = h.blocked()
            return {"ui": {"text": [report], "scores": []}, "result": (blocked, blocked)}
        index = torch.tensor(kept, device=images.device)
        return {"ui": {"text": [report], "scores": scores}, "result": (h.output(images.index_select(0, index)), scores)}


def select_report(result: SimilarityResult | AestheticResult, kept: list[int], top_k: int, min_score: float) -> str:
    """What was kept and why, then the similarity (or aesthetic) report of the whole batch."""
    n = len(result.scores)
    units = result.scale if isinstance(result, SimilarityResult) else "aesthetic score; text and scale unused"
    rule = f"top_k {top_k}, min_score {min_score:g} ({units})"
    if kept:
        shown = ", ".join(f"#{i} ({result.scores[i]:.4f})" for i in kept)
        head = f"kept {len(kept)} of {n} image{'s' if n != 1 else ''} ({rule}), best first: {shown}"
    else:
        best = result.best_index
        head = (
            f"kept none of {n} image{'s' if n != 1 else ''}: no score reached min_score {min_score:g} "
            f"(best #{best}: {result.scores[best]:.4f} {units}); nothing passed on, the nodes fed by "
            "this node are skipped"
        )
    if result.invalid:
        bad = sorted(result.invalid)
        head += (
            f"\nnever kept: image{'s' if len(bad) > 1 else ''} {', '.join(f'#{i}' for i in bad)}, whose score is not "
            "finite (NaN or infinite; see below why)"
        )
    return head + "\n" + result.report
