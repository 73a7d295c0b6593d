"""Choice strings: each tuple of choices (node widget options, CLI ``choices``) is derived from a ``Literal``
alias, keeps its values and order (default first), and the alias is exported next to the tuple."""

from __future__ import annotations

import typing

import pytest

from clip_suite.clip_impl import a1111, clip_skip, images, scoring, text, weights
from clip_suite.clip_impl.text.pipeline import WEIGHTING_SYNTAX

# (face, tuple name, alias name, the values in widget order)
CHOICES = [
    (text, "CHUNKINGS", "Chunking", ("comfy", "a1111")),
    (text, "WEIGHTINGS", "Weighting", ("comfy", "a1111", "a1111_no_norm", "none")),
    (text, "POOLED_MODES", "PooledMode", ("first_chunk", "mean")),
    (text, "EMPTY_PROMPT_MODES", "EmptyPromptMode", ("encode", "zeros")),
    (clip_skip, "APPLIES_TO", "AppliesTo", ("both", "clip_l", "clip_g")),
    (scoring, "SCALES", "Scale", ("clipscore_100", "clipscore_2_5", "cosine", "logit")),
    (images, "FITS", "Fit", ("crop", "pad")),
    (weights, "ARCHITECTURES", "Architecture", ("auto", "sd1", "sd2", "sdxl", "sdxl_refiner", "clip")),
    (weights, "PRECISIONS", "Precision", ("auto", "fp32", "fp16", "bf16")),
    (a1111, "SCHEDULERS", "Scheduler", (
        "simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal", "linear_quadratic",
        "kl_optimal",
    )),
    (a1111, "INFOTEXT_FAMILIES", "InfotextFamily", ("sd1", "sd2", "sdxl")),
]


@pytest.mark.parametrize("face, name, alias, values", CHOICES, ids=[c[1] for c in CHOICES])
def test_tuple_is_the_literals_arguments(face, name, alias, values):
    choices, literal = getattr(face, name), getattr(face, alias)
    assert typing.get_origin(literal) is typing.Literal
    assert type(choices) is tuple and choices == values  # values and order as the widgets had them
    assert choices == typing.get_args(literal)


@pytest.mark.parametrize("face, name, alias, values", CHOICES, ids=[c[1] for c in CHOICES])
def test_alias_is_exported_by_its_face(face, name, alias, values):
    if face is clip_skip:  # a core module: no __all__, imported as it is
        return
    assert name in face.__all__ and alias in face.__all__


def test_weighting_syntax_covers_every_weighting_in_order():
    assert tuple(WEIGHTING_SYNTAX) == text.WEIGHTINGS
    assert [text.weighting_syntax(w) for w in text.WEIGHTINGS] == ["comfy", "a1111", "a1111", "none"]


def test_settings_fields_use_the_aliases():
    hints = typing.get_type_hints(text.EncodeSettings)
    assert hints["chunking"] is text.Chunking and hints["weighting"] is text.Weighting
    assert hints["pooled"] is text.PooledMode and hints["empty_prompt"] is text.EmptyPromptMode
    assert hints["clip_skip_applies_to"] is clip_skip.AppliesTo
    defaults = text.EncodeSettings()
    assert defaults.chunking == text.CHUNKINGS[0] and defaults.weighting == text.WEIGHTINGS[0]
    assert defaults.pooled == text.POOLED_MODES[0] and defaults.empty_prompt == text.EMPTY_PROMPT_MODES[0]
    assert defaults.clip_skip_applies_to == clip_skip.APPLIES_TO[0]


def test_bad_choices_are_still_refused_at_run_time():
    with pytest.raises(ValueError, match="use one of comfy, a1111, a1111_no_norm, none"):
        text.weighting_syntax("bogus")
    with pytest.raises(ValueError, match="use one of first_chunk, mean"):
        text.EncodeSettings(pooled="bogus").validate()
    with pytest.raises(ValueError, match="use one of sd1, sd2, sdxl"):
        a1111.translate(a1111.parse_infotext("a cat"), "sdxl_refiner")
