"""The infotext reader passes on only values ComfyUI's own widgets accept (issue 26): KSampler's steps 1..10000,
cfg 0..100 and seed 0..2**64-1, EmptyLatentImage's size 16..16384 in steps of 8, and the family's clip-skip
range; anything else is replaced by the default, and the report says which value and why."""

from __future__ import annotations

import pytest

from clip_suite.clip_impl.a1111 import parse_infotext, translate
from clip_suite.clip_impl.a1111.infotext import RANGES

GOOD = {"Steps": "20", "Sampler": "Euler", "CFG scale": "7", "Seed": "8", "Size": "512x768"}


def read(family="sd1", **fields):
    values = {**GOOD, **{k.replace("_", " "): v for k, v in fields.items()}}
    line = ", ".join(f"{k}: {v}" for k, v in values.items())
    settings = translate(parse_infotext(f"a cat\nNegative prompt: ugly\n{line}, Version: v1.10.1"), family)
    return settings, "\n".join(settings.report)


@pytest.mark.parametrize("steps", ["-5", "0", "10001", "1000000000000", "100000000"])
def test_steps_outside_ksamplers_range_become_the_default(steps):
    settings, report = read(Steps=steps)
    assert settings.steps == 20
    assert f"Steps: {steps} is out of range (1..10000, ComfyUI's KSampler); replaced by the default 20" in report


@pytest.mark.parametrize("cfg", ["inf", "-inf", "-1", "100.5", "1e308"])
def test_cfg_outside_ksamplers_range_becomes_the_default(cfg):
    settings, report = read(CFG_scale=cfg)
    assert settings.cfg == 7.0 and f"CFG scale: {cfg} is out of range (0..100" in report


@pytest.mark.parametrize("seed", ["-1", "-5", "18446744073709551616", "12345678901234567890123456"])
def test_seeds_outside_ksamplers_range_become_the_default(seed):
    settings, report = read(Seed=seed)
    assert settings.seed == 0 and f"Seed: {seed} is out of range" in report and "replaced by the default 0" in report


@pytest.mark.parametrize("size", ["99999999x99999999", "0x0", "8x512", "512x16392", "1" * 26 + "x512"])
def test_sizes_outside_empty_latent_images_range_become_the_default(size):
    settings, report = read(Size=size)
    assert (settings.width, settings.height) == (512, 512)
    assert "is out of range (16..16384 each, ComfyUI's EmptyLatentImage); replaced by the default 512x512" in report
    assert len(report) < 2000


def test_sizes_off_the_latent_grid_are_rounded_down_with_a_note():
    settings, report = read(Size="1001x1023")
    assert (settings.width, settings.height) == (1000, 1016) and "not a multiple of 8" in report


@pytest.mark.parametrize("family,clip_skip", [("sd1", "13"), ("sd1", "0"), ("sd1", "-3"), ("sd1", "1000000000"),
                                              ("sdxl", "33"), ("sd2", "1000000000")])
def test_clip_skip_beyond_the_familys_towers_becomes_1(family, clip_skip):
    settings, report = read(family, Clip_skip=clip_skip)
    assert settings.clip_skip == 0
    assert f"Clip skip: {clip_skip} is out of range for" in report and "replaced by the default 1" in report


def test_forge_clip_skip_beyond_sdxls_clip_l_becomes_1():
    text = "a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 8, Size: 1024x1024, Clip skip: 13, Version: f2.0.1"
    settings = translate(parse_infotext(text), "sdxl")
    assert settings.clip_skip == 0 and "Clip skip: 13 is out of range for SDXL" in "\n".join(settings.report)


def test_values_in_range_pass_unchanged():
    settings, report = read("sd1", Steps="10000", CFG_scale="100", Seed=str(2**64 - 1), Size="16384x16", Clip_skip="12")
    assert (settings.steps, settings.cfg, settings.seed, settings.width, settings.height, settings.clip_skip) == (
        10000, 100.0, 2**64 - 1, 16384, 16, 11)
    assert "out of range" not in report
    assert RANGES["steps"][:2] == (1, 10000) and RANGES["seed"][1] == 0xFFFFFFFFFFFFFFFF


def test_huge_values_are_cut_in_the_report():
    settings, report = read(Steps="9" * 100_000, Sampler="x" * 100_000, Hires_prompt="y" * 100_000)
    assert settings.steps == 20 and len(report) < 3000 and "Steps: '99999999999999999999'... (100,000 characters) is out" in report
