"""What CLIP itself is for: image-text similarity (CLIPScore, cosine, PickScore/HPS logits), zero-shot
labels, LAION-style aesthetic heads, embedding image files in batches, and the incremental search index
behind search and de-duplication.
"""

from .aesthetic import AestheticHead, AestheticResult, aesthetic_scores, check_fits, load_head
from .finite import describe_value, not_finite_reasons
from .file_embedding import FileEmbedding, embed_image_files, read_pixels
from .index_file import MAX_ENTRIES, NotAnIndexError, inspect_target
from .search_index import EmbeddingIndex, default_index_path, model_fingerprint, refresh, summary_line
from .similarity import (
    SCALES, Scale, ScoringPrompt, SimilarityResult, apply_scale, logit_factor, pixel_embeddings, prepare_prompt,
    score_images, scoring_towers, text_embedding,
)
from .zero_shot import (
    DEFAULT_TEMPLATE, MAX_LABEL_CHARS, MAX_LABELS, MAX_LABELS_TEXT, ZeroShotResult, check_sizes, classify_embeddings,
    classify_images, label_embeddings, parse_labels, parse_templates,
)

__all__ = [
    "AestheticHead", "AestheticResult", "aesthetic_scores", "check_fits", "load_head", "FileEmbedding",
    "embed_image_files", "read_pixels", "MAX_ENTRIES", "NotAnIndexError", "inspect_target", "EmbeddingIndex",
    "default_index_path", "model_fingerprint", "refresh", "summary_line", "SCALES", "Scale", "ScoringPrompt",
    "SimilarityResult", "apply_scale", "logit_factor", "pixel_embeddings", "prepare_prompt", "score_images",
    "scoring_towers", "text_embedding", "DEFAULT_TEMPLATE", "MAX_LABEL_CHARS", "MAX_LABELS", "MAX_LABELS_TEXT",
    "ZeroShotResult", "check_sizes", "classify_embeddings", "classify_images", "label_embeddings", "parse_labels",
    "parse_templates", "describe_value", "not_finite_reasons",
]
