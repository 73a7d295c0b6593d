"""``ClipSuiteZeroShot``: label every image of a batch with one of the user's categories (CLIP zero-shot).

The maths is ``clip_impl.scoring.zero_shot`` (templates ensembled as in the CLIP paper; softmax of the model's
``exp(logit_scale)`` x cosine, 100 x cosine for a text encoder + clip_vision pair). The host loads the
vision tower and its text tower first, as for the similarity node. Outputs are lists (``OUTPUT_IS_LIST``),
one value per image in batch order; the report (every image's top 3 labels) is shown on the node.
"""

from __future__ import annotations

import math

from ..clip_impl.scoring import DEFAULT_TEMPLATE, classify_images, parse_labels, parse_templates, scoring_towers
from . import common, host
from .similarity import IMAGES_TOOLTIP, SCORING_CLIP_TOOLTIP, scoring_clip

LABELS_TOOLTIP = (
    "The categories, one a line (at least 2; blank lines and surrounding spaces are ignored), e.g. portrait / "
    "landscape / anime / photo on four lines. Each image gets the most probable one. Used as written: "
    "brackets are words here, not weighting. Labels that differ only in case or spacing are the same label to "
    "CLIP (refused as given twice). At most 200,000 labels of at most 1,000 characters each."
)
TEMPLATE_TOOLTIP = (
    "The text around each label; {} is where the label goes ('a photo of {}.' as in the CLIP paper). Several "
    "templates separated by ' | ' (e.g. 'a photo of {}. | a drawing of {}. | an image of {}.') are ensembled "
    "as the CLIP paper does: the mean of their normalised text embeddings, normalised again."
)


class ClipSuiteZeroShot:
    """Classify Images (CLIP zero-shot): the most probable label of a list for every image of a batch."""

    DESCRIPTION = (
        "Labels every image of a batch with the most probable of your categories, with a CLIP model that has a "
        "vision tower (zero-shot classification: no training, just the label names). Probabilities are the "
        "softmax over the labels of the model's logit_scale.exp() x cosine (100 x cosine for a text encoder + "
        "clip_vision pair; the report says which). Outputs are lists, one value per image in batch order; the "
        "report on the node shows each image's top 3 labels."
    )
    CATEGORY = common.CATEGORY
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS, OUTPUT_IS_LIST = common.declare_outputs(
        common.Output("STRING", "label", is_list=True, tooltip=(
            "Each image's most probable label, in batch order (a list: nodes fed by it run once per image).")),
        common.Output("FLOAT", "probability", is_list=True, tooltip=(
            "That label's probability (0..1, softmax over the labels), one per image.")),
        common.Output("INT", "label_index", is_list=True, tooltip=(
            "That label's index in the labels list (from 0), one per image.")),
        common.report_output(
            "A table of every image's top 3 labels with their probabilities, and the logit factor used."),
    )
    FUNCTION = "classify"
    OUTPUT_NODE = True  # shows the labels even when nothing takes its outputs

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": (common.CLIP_TYPES, {"tooltip": SCORING_CLIP_TOOLTIP}),
                "images": ("IMAGE", {"tooltip": IMAGES_TOOLTIP}),
                "labels": ("STRING", {"multiline": True, "dynamicPrompts": False, "default": "",
                                      "tooltip": LABELS_TOOLTIP}),
                "template": ("STRING", {"multiline": False, "dynamicPrompts": False, "default": DEFAULT_TEMPLATE,
                                        "tooltip": TEMPLATE_TOOLTIP}),
            }
        }

    def classify(self, clip, images, labels, template):
        names, templates = parse_labels(labels), parse_templates(template)  # before any model work
        h = host.get_host()
        hosted = scoring_clip(clip)
        model = hosted.model
        text_tower, _ = scoring_towers(model)
        role = next(r for r, t in model.towers.items() if t is text_tower)
        h.prepare(hosted, parts=("vision", role))
        result = classify_images(model, images, names, templates)
        if not all(math.isfinite(p) for p in result.probabilities.flatten().tolist()):
            raise ValueError(
                "the model gave NaN or infinite probabilities; its numbers overflowed or its weights are broken: "
                "load it with precision fp32, or use another file"
            )
        indexes = result.label_indexes
        report = result.report
        label_out = [names[i] for i in indexes]
        probs = [float(result.probabilities[b, i]) for b, i in enumerate(indexes)]
        return {"ui": {"text": [report]}, "result": (label_out, probs, indexes, report)}
