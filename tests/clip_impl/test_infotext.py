"""The infotext reader (``clip_impl/a1111/infotext.py``) on infotexts in the formats A1111 1.10 and Forge write.

Each case is written by hand in A1111 1.10's / Forge's output format (``processing.create_infotext``: the
prompt, "Negative prompt: ..." when there is one, then one line of ``key: value`` fields; values with a
comma, colon or line break JSON-quoted; "Clip skip" only when above 1; "Emphasis" only when not Original;
Forge's Version starts with "f"), with the outputs expected from the rules in DESIGN 4 and the README.
"""

from __future__ import annotations

import random
import string

import pytest

from clip_suite.clip_impl.a1111.infotext import parse_infotext, translate

A1111 = "Version: v1.10.1"
FORGE = "Version: f2.0.1v1.10.1-previous-224-g900196889"
SD15_TAIL = "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly"
XL_TAIL = "Model hash: 31e35c80fc, Model: sd_xl_base_1.0"

# (infotext, family, expected outputs (subset), phrases the report must hold)
CASES = [
    (  # 1 SD1.5, Clip skip 2, LoRA tag, schedule, quoted Lora hashes
        "masterpiece, best quality, 1girl, (smile:1.2), [dog:cat:0.5] <lora:detail_tweaker:0.8>\n"
        "Negative prompt: lowres, bad anatomy, (worst quality:1.4)\n"
        f"Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 1234567890, Size: 512x768, "
        f"{SD15_TAIL}, Clip skip: 2, Lora hashes: \"detail_tweaker: 0f1b2c3d4e5f\", {A1111}",
        "sd1",
        dict(positive="masterpiece, best quality, 1girl, (smile:1.2), [dog:cat:0.5] <lora:detail_tweaker:0.8>",
             negative="lowres, bad anatomy, (worst quality:1.4)", clip_skip=1, clip_skip_applies_to="both",
             weighting="a1111", chunking="a1111", steps=28, cfg=7.5, seed=1234567890, width=512, height=768,
             lora_tags=["detail_tweaker:0.8"]),
        ["made with A1111", "Clip skip: 2 -> clip_skip 1", "sampler DPM++ 2M", "schedule type Karras"],
    ),
    (  # 2 SD1.5 without Clip skip and without a negative prompt
        f"a photo of a cat\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 42, "
        f"Size: 512x512, {SD15_TAIL}, {A1111}",
        "sd1", dict(positive="a photo of a cat", negative="", clip_skip=0, steps=20, cfg=7.0, seed=42, lora_tags=[]),
        ["no Clip skip field (= 1) -> clip_skip 0"],
    ),
    (  # 3 SDXL A1111, Emphasis No norm, Clip skip 2 that A1111 ignored
        "cinematic photo of a lighthouse, (storm:1.3)\nNegative prompt: cartoon\n"
        f"Steps: 30, Sampler: DPM++ 2M SDE, Schedule type: Karras, CFG scale: 5, Seed: 7, Size: 1024x1024, {XL_TAIL}, "
        f"Clip skip: 2, Emphasis: No norm, {A1111}",
        "sdxl", dict(clip_skip=0, weighting="a1111_no_norm", width=1024, height=1024, cfg=5.0),
        ["A1111 ignores Clip skip 2 on SDXL", "Emphasis: No norm -> weighting a1111_no_norm"],
    ),
    (  # 4 SDXL Forge, Clip skip 2: Forge's penultimate layer = our 0
        f"a castle\nNegative prompt: blurry\nSteps: 25, Sampler: Euler, CFG scale: 6, Seed: 99, Size: 832x1216, "
        f"{XL_TAIL}, Clip skip: 2, {FORGE}",
        "sdxl", dict(clip_skip=0, clip_skip_applies_to="both", width=832, height=1216),
        ["made with Forge", "Clip skip: 2 -> clip_skip 0"],
    ),
    (  # 5 SDXL Forge, Clip skip 3 -> 1 on both towers
        f"a castle\nSteps: 25, Sampler: Euler, CFG scale: 6, Seed: 99, Size: 1024x1024, Clip skip: 3, {FORGE}",
        "sdxl", dict(clip_skip=1, clip_skip_applies_to="both"), ["Clip skip: 3 -> clip_skip 1 (both)"],
    ),
    (  # 6 SD1.5 Forge, Clip skip 2 -> 1
        f"anime girl\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512, Clip skip: 2, {FORGE}",
        "sd1", dict(clip_skip=1), ["made with Forge"],
    ),
    (  # 7 Hires fields, a quoted Hires prompt with commas
        "a knight, armor\nNegative prompt: bad hands\n"
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 3, Size: 512x512, "
        f"{SD15_TAIL}, Denoising strength: 0.45, Clip skip: 2, Hires prompt: \"a knight, shiny armor\", "
        f"Hires upscale: 2, Hires steps: 15, Hires upscaler: R-ESRGAN 4x+ Anime6B, {A1111}",
        "sd1", dict(positive="a knight, armor", clip_skip=1, steps=20),
        ["Hires prompt: a knight, shiny armor", "Hires upscale: 2", "Denoising strength: 0.45"],
    ),
    (  # 8 ADetailer fields with quoted prompts holding commas and colons
        "portrait of a woman\nNegative prompt: ugly\n"
        "Steps: 25, Sampler: Euler a, CFG scale: 6.5, Seed: 11, Size: 512x704, ADetailer model: face_yolov8n.pt, "
        "ADetailer prompt: \"detailed face, (smile:1.1)\", ADetailer confidence: 0.3, ADetailer dilate erode: 4, "
        f"ADetailer version: 24.9.0, {A1111}",
        "sd1", dict(cfg=6.5, height=704, negative="ugly"), [],
    ),
    (  # 9 multi-line prompt and negative prompt
        "line one,\nline two (x:1.1),\n  line three  \nNegative prompt: neg one,\nneg two\n"
        f"Steps: 12, Sampler: Euler, CFG scale: 4, Seed: 1, Size: 640x480, {A1111}",
        "sd1", dict(positive="line one,\nline two (x:1.1),\nline three", negative="neg one,\nneg two", steps=12,
                    width=640, height=480), [],
    ),
    (  # 10 "Negative prompt:" only, no positive prompt
        f"Negative prompt: ugly, blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 8, Size: 512x512, {A1111}",
        "sd1", dict(positive="", negative="ugly, blurry"), [],
    ),
    (  # 11 Emphasis None
        f"(plain:1.5) text\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 8, Size: 512x512, Emphasis: None, {A1111}",
        "sd1", dict(weighting="none"), ["Emphasis: None -> weighting none"],
    ),
    (  # 12 SD2 A1111 with Clip skip 2 (ignored on SD2)
        f"a fox\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 8, Size: 768x768, Clip skip: 2, {A1111}",
        "sd2", dict(clip_skip=0), ["A1111 ignores Clip skip 2 on SD2.x"],
    ),
    (  # 13 SD2 Forge without Clip skip: Forge's default 1 is SD2's final layer
        f"a fox\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 8, Size: 768x768, {FORGE}",
        "sd2", dict(clip_skip=-1), ["final layer"],
    ),
    (  # 14 AND, BREAK and schedules kept in the prompt
        "a cat [sitting|standing] AND a dog :0.5 BREAK [red:blue:10] ball\nNegative prompt: [ugly::0.3]\n"
        f"Steps: 30, Sampler: Euler, CFG scale: 7, Seed: 8, Size: 512x512, {A1111}",
        "sd1", dict(positive="a cat [sitting|standing] AND a dog :0.5 BREAK [red:blue:10] ball",
                    negative="[ugly::0.3]", steps=30), [],
    ),
    (  # 15 no field line (fewer than three fields): all text is prompt, defaults apply
        "just a prompt, Steps: 5\nsecond line", "sd1",
        dict(positive="just a prompt, Steps: 5\nsecond line", steps=20, cfg=7.0, width=512, height=512),
        ["Steps: not in the infotext; using 20"],
    ),
    (  # 16 TI hashes and an embedding in the negative prompt
        "a tree\nNegative prompt: easynegative, lowres\n"
        f"Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 8, Size: 512x512, TI hashes: \"easynegative: c74b4e810b03\", "
        f"{A1111}",
        "sd1", dict(negative="easynegative, lowres"), [],
    ),
    (  # 17 old Forge version string on SDXL, Clip skip absent (1) -> penultimate
        "a robot\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 8, Size: 1024x1024, "
        "Version: f0.0.17v1.8.0rc-latest-276-g29be1da7",
        "sdxl", dict(clip_skip=0), ["made with Forge", "Forge uses the penultimate layer for Clip skip 1 on SDXL"],
    ),
    (  # 18 unreadable Size and Steps: named, defaults used
        f"a boat\nSteps: twenty, Sampler: Euler, CFG scale: 7, Seed: 8, Size: 512x, {A1111}",
        "sd1", dict(steps=20, width=512, height=512), ["unreadable: Steps: 'twenty'", "unreadable: Size: '512x'"],
    ),
    (  # 19 hypernetwork fields: A1111 pastes a hypernet tag back into the prompt
        f"a girl\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 8, Size: 512x512, Hypernet: anime_3, "
        f"Hypernet strength: 0.5, {A1111}",
        "sd1", dict(positive="a girl<hypernet:anime_3:0.5>", lora_tags=[]), ["hypernet"],
    ),
    (  # 20 SDXL A1111, several LoRAs, no Clip skip, quoted value with an escaped quote
        "<lora:a:0.6> a <lora:b:1.1>cat <lyco:c:0.4:0.2>\n"
        f"Steps: 40, Sampler: DPM++ 2M, CFG scale: 8, Seed: 4294967295, Size: 896x1152, {XL_TAIL}, "
        f"Template: \"a \\\"quoted\\\" word, x\", {A1111}",
        "sdxl", dict(clip_skip=0, seed=4294967295, lora_tags=["a:0.6", "b:1.1", "c:0.4"], steps=40),
        ["3 extra-network tag(s)"],
    ),
    (  # 21 Emphasis Original written explicitly, CRLF line ends
        "a dog\r\nNegative prompt: cat\r\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 8, Size: 512x512, "
        f"Emphasis: Original, {A1111}",
        "sd1", dict(positive="a dog", negative="cat", weighting="a1111"), [],
    ),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_infotexts(case):
    text, family, expected, phrases = CASES[case]
    settings = translate(parse_infotext(text), family)
    for key, value in expected.items():
        assert getattr(settings, key) == value, (case + 1, key, getattr(settings, key))
    report = "\n".join(settings.report)
    for phrase in phrases:
        assert phrase in report, (case + 1, phrase, report)


def test_quoted_values_are_unquoted():
    info = parse_infotext('p\nSteps: 1, Sampler: Euler, CFG scale: 7, Template: "a \\"b\\", c: d"')
    assert info.fields["Template"] == 'a "b", c: d'


PIECES = ["Steps: ", "Negative prompt:", "Size: ", "Clip skip: ", "Emphasis: ", "Version: f", "Version: v", "CFG scale: ",
          "Seed: ", "\n", ", ", ":", '"', "\\", "x", "512x512", "1e400", "-3", "nan", "inf", "99999999999999999999999",
          "<lora:", ">", "[a:b:0.5]", "AND", "é", "\x00", "\r", "  ", "Hypernet: ", "Hires prompt: \"", "Size-1: "]


def test_fuzzed_strings_never_raise():
    r = random.Random(5000)
    for i in range(5000):
        parts = [r.choice(PIECES) if r.random() < 0.7 else "".join(r.choices(string.printable, k=r.randint(1, 6)))
                 for _ in range(r.randint(0, 25))]
        text = "".join(parts)
        settings = translate(parse_infotext(text), r.choice(["sd1", "sd2", "sdxl"]))
        assert isinstance(settings.positive, str) and isinstance(settings.steps, int), text
    assert translate(parse_infotext(None), "sd1").report[-1].startswith("unreadable")
