"""Our text towers against transformers' CLIPTextModelWithProjection on the same weights, every layout."""

import pytest
import torch

from clip_suite.clip_impl.weights.loading import load_clip

TOL = 1e-5


def ids_batch():
    return torch.tensor(
        [
            [49406, 320, 1125, 539, 320, 2368, 49407] + [49407] * 70,
            [49406] + list(range(1000, 1060)) + [49407] + [0] * 15,
            [49406, 49407] + [0] * 75,
        ]
    )


def compare(tower, ref, ids, layer_norm_rule=None):
    with torch.no_grad():
        out = ref(input_ids=ids, output_hidden_states=True)
    n = ref.config.num_hidden_layers
    for layer in range(1, n + 1):
        for ln in (False, True):
            ours = tower(ids, layer, ln)
            want = out.hidden_states[layer]
            if ln:
                want = ref.text_model.final_layer_norm(want)
            diff = (ours.hidden - want).abs().max().item()
            assert diff <= TOL, f"layer {layer} ln={ln}: max diff {diff:.3g}"
            if tower.text_projection is not None:
                pd = (ours.pooled - out.text_embeds).abs().max().item()
                assert pd <= TOL, f"pooled at layer {layer}: max diff {pd:.3g}"
            raw = tower(ids, layer, ln, project=False).pooled
            want_raw = out.last_hidden_state[torch.arange(3), (ids == 49407).int().argmax(-1)]
            assert (raw - want_raw).abs().max().item() <= TOL


LAYOUTS = [
    ("sd15.safetensors", "l", "l_model"),
    ("sd15_old.safetensors", "l", "l_model"),
    ("sd21.safetensors", "h", "h_model"),
    ("sdxl.safetensors", "l", "l_model"),
    ("sdxl.safetensors", "g", "g_model"),
    ("refiner.safetensors", "g", "g_model"),
    ("clip_l.safetensors", "l", "l_model"),
    ("clip_g_openclip.safetensors", "g", "g_model"),
    ("diffusers_sdxl", "l", "l_model"),
    ("diffusers_sdxl", "g", "g_model"),
]


@pytest.mark.parametrize("name,role,ref_name", LAYOUTS)
def test_tower_matches_transformers(model_dir, request, name, role, ref_name):
    ref = request.getfixturevalue(ref_name)
    arch = {"clip_g_openclip.safetensors": "sdxl_refiner"}.get(name, "auto")
    model = load_clip(model_dir / name, architecture=arch, precision="fp32")
    compare(model.towers[role], ref, ids_batch())


def test_pooled_rows_subset(model_dir, l_model):
    tower = load_clip(model_dir / "clip_l.safetensors", precision="fp32").towers["l"]
    ids = ids_batch()
    full = tower(ids, 2, False)
    part = tower(ids, 2, False, pooled_rows=[2, 0])
    assert torch.equal(part.hidden, full.hidden)
    assert torch.allclose(part.pooled, full.pooled[[2, 0]], atol=TOL)
    assert tower(ids, 2, False, pooled_rows=[]).pooled is None
