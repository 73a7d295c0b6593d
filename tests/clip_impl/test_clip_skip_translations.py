"""Other tools' clip-skip settings in our convention (clip_skip.py's translation functions, DESIGN 4)."""

import pytest

from clip_suite.clip_impl import clip_skip as cs

SD1, SD2, SDXL = cs.FAMILIES["sd1"], cs.FAMILIES["sd2"], cs.FAMILIES["sdxl"]
REAL = {"sd1": {"l": 12}, "sd2": {"h": 24}, "sdxl": {"l": 12, "g": 32}, "sdxl_refiner": {"g": 32}}


@pytest.mark.parametrize("name", sorted(REAL))
def test_set_last_layer_selects_the_same_layer(name):
    """CLIPSetLastLayer -N uses hidden layer n+1-N of an n-layer tower (with its final LayerNorm for SD1.x/SD2.x,
    as ComfyUI's layer_norm_hidden_state does): the translated clip_skip must pick exactly that layer."""
    family, depths = cs.FAMILIES[name], REAL[name]
    low, high = cs.clip_skip_range(family, depths)
    for n in range(1, 13):
        k = cs.from_set_last_layer(family, -n)
        assert cs.to_set_last_layer(family, k) == -n
        if not low <= k <= high:
            continue
        for t, choice in cs.resolve_layers(family, depths, k).items():
            assert choice.layer == depths[t] + 1 - n, (name, n, k)


def test_set_last_layer_table():
    assert [cs.from_set_last_layer(SD1, -n) for n in (1, 2, 3)] == [0, 1, 2]
    assert [cs.from_set_last_layer(SDXL, -n) for n in (1, 2, 3)] == [-1, 0, 1]
    assert [cs.from_set_last_layer(SD2, -n) for n in (1, 2, 3)] == [-1, 0, 1]
    with pytest.raises(ValueError, match="CLIPSetLastLayer takes -1, -2"):
        cs.from_set_last_layer(SD1, 0)


def test_a1111():
    assert cs.from_a1111(SD1, 2) == cs.Translation(1)
    assert cs.from_a1111(SD1, 1) == cs.Translation(0) and cs.from_a1111(SD1, 0) == cs.Translation(0)
    off = cs.from_a1111(SDXL, 2)
    assert (off.clip_skip, off.applies_to) == (0, "both") and "ignores" in off.note  # A1111's fake slider
    on = cs.from_a1111(SDXL, 3, sdxl_clip_l_skip=True)
    assert (on.clip_skip, on.applies_to) == (1, "clip_l")
    assert cs.from_a1111(SDXL, 1, sdxl_clip_l_skip=True).clip_skip == -1  # L's raw final layer
    assert cs.from_a1111(SD2, 2).clip_skip == 0  # A1111 is always penultimate on SD2
    assert cs.from_a1111(SD1, 1).note == "" and cs.from_a1111(SDXL, 1).note == ""


def test_forge_and_diffusers():
    assert cs.from_forge(SD1, 2) == cs.Translation(1)
    assert [cs.from_forge(SDXL, n).clip_skip for n in (1, 2, 3, 4)] == [0, 0, 1, 2]
    assert all(cs.from_forge(SDXL, n).applies_to == "both" for n in (1, 2, 3))
    assert [cs.from_diffusers(SDXL, k) for k in (None, 0, 1, 2)] == [0, 0, 1, 2]
    assert cs.from_diffusers(SD1, 1) == 1
