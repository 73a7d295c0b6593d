"""``encode_scheduled``: one prompt planned, encoded once per distinct text and given its timestep ranges, on
tiny random models (the nodes' and the command line's use of it: tests/nodes/test_scheduled_encode_node.py,
tests/cli/test_cli_schedule.py)."""

import pytest
import torch

from clip_suite import clip_impl
from clip_suite.clip_impl.a1111 import ScheduledEncoding, encode_scheduled, plan_prompt, step_percents, step_texts
from clip_suite.clip_impl.text import EncodeSettings, encode_prompt
from clip_suite.clip_impl.weights import load_clip

A1111 = EncodeSettings(chunking="a1111", weighting="a1111")


@pytest.fixture(scope="module")
def sd15(model_dir):
    return load_clip([str(model_dir / "sd15.safetensors")])


@pytest.fixture(scope="module")
def sdxl(model_dir):
    return load_clip([str(model_dir / "sdxl.safetensors")])


def test_public_face_exports_it():
    assert clip_impl.encode_scheduled is encode_scheduled and clip_impl.ScheduledEncoding is ScheduledEncoding
    assert {"encode_scheduled", "ScheduledEncoding", "ScheduledEntry"} <= set(clip_impl.__all__)


@pytest.mark.parametrize("scheduler", ["normal", "ddim_uniform"])
def test_entries_cover_every_step_once(sd15, scheduler):
    prompt, steps = "a [dog:cat:0.5] on a [red|blue] mat", 12
    result = encode_scheduled(sd15, prompt, A1111, steps, scheduler, cache=None)
    percents = step_percents(scheduler, steps)
    assert result.percents == tuple(percents)
    assert result.plan.steps == len(percents) - 1  # ddim_uniform runs 13 steps for 12: the plan covers them all
    covered = [s for e in result.entries for s in range(e.start_step, e.end_step)]
    assert covered == list(range(result.plan.steps))
    texts = step_texts(prompt, steps)
    for e in result.entries:
        assert (e.start_percent, e.end_percent) == (percents[e.start_step], percents[e.end_step])
        assert e.strength is None and e.text == texts[min(e.start_step, steps - 1)]
        assert e.encoded.cond.shape == (1, 77, 128) and e.encoded.pooled.shape == (1, 128)
    assert result.first is result.entries[0].encoded
    assert result.status_lines[0] == (f"schedule: {len(set(texts))} prompts over {steps} steps ({scheduler}), "
                                      f"{len(result.entries)} entries")
    assert any("runs 13 steps for steps=12" in line for line in result.status_lines) == (scheduler == "ddim_uniform")


def test_each_text_encoded_once_and_equal_to_encode_prompt(sd15):
    result = encode_scheduled(sd15, "[x|y] z", A1111, 6, "karras", cache=None)
    assert len(result.entries) == 5 and len(result.encoded) == 2  # x x y x y x
    for key, encoded in result.encoded.items():
        shared = [e.encoded for e in result.entries if (e.text, e.text_l) == key]
        assert all(s is encoded for s in shared)  # alternation's repeats share one encoding
        ref = encode_prompt(sd15, key[0], A1111, cache=None)
        torch.testing.assert_close(encoded.cond, ref.cond, rtol=0, atol=0)
        torch.testing.assert_close(encoded.pooled, ref.pooled, rtol=0, atol=0)


def test_without_steps_one_entry_per_and_part(sd15):
    result = encode_scheduled(sd15, "a [dog:cat:0.5] AND a bird :0.5", A1111, cache=None)
    assert result.percents is None and result.plan.steps == 0
    assert [(e.text, e.strength, e.start_percent) for e in result.entries] == [
        ("a [dog:cat:0.5]", 1.0, None), (" a bird", 0.5, None)]
    assert any("schedule syntax" in line for line in result.status_lines)
    assert any("multiply the sampler's cfg by 1.5" in line for line in result.status_lines)


def test_plain_prompt_is_one_plain_entry(sd15):
    result = encode_scheduled(sd15, "a cat", A1111, 20, "normal", cache=None)
    (entry,) = result.entries
    assert (entry.start_step, entry.end_step) == (0, 20) and result.percents is None  # nothing to range
    assert (entry.start_percent, entry.end_percent, entry.strength) == (None, None, None)
    assert result.status_lines == ()
    weighted = encode_scheduled(sd15, "a cat :0.7", A1111, cache=None)
    assert weighted.entries[0].strength == 0.7  # a weight other than 1 is kept even without AND


def test_parts_keep_ranges_only_where_partial(sd15):
    result = encode_scheduled(sd15, "a [b:c:2] AND d :0.5", A1111, 4, "normal", cache=None)
    got = [((e.start_step, e.end_step) if e.start_percent is not None else None, e.strength) for e in result.entries]
    assert got == [((0, 3), 1.0), ((3, 4), 1.0), (None, 0.5)]  # d covers every step: no range


def test_long_schedules_list_twelve_entries(sd15):
    result = encode_scheduled(sd15, "[a|b]", A1111, 20, "normal", cache=None)
    assert len(result.entries) == 19  # steps 0 and 1 both use a
    listed = [line for line in result.status_lines if line.startswith("  steps ")]
    assert len(listed) == 12 and result.status_lines[-1] == "  ... 7 more entries"


def test_sdxl_text_l_schedule(sdxl):
    result = encode_scheduled(sdxl, "[a:b:3]", A1111, 6, "karras", text_l="[c|d]", cache=None)
    assert [(e.text, e.text_l, e.start_step, e.end_step) for e in result.entries] == [
        ("a", "c", 0, 2), ("a", "d", 2, 3), ("a", "c", 3, 4), ("b", "d", 4, 5), ("b", "c", 5, 6)]
    assert result.plan == plan_prompt("[a:b:3]", weighting="a1111", steps=6, text_l="[c|d]")
    ref = encode_prompt(sdxl, "a", A1111, text_l="d", cache=None)
    torch.testing.assert_close(result.entries[1].encoded.cond, ref.cond, rtol=0, atol=0)


def test_bad_steps_raise(sd15):
    with pytest.raises(ValueError, match="steps=-1"):
        encode_scheduled(sd15, "a", A1111, -1)

