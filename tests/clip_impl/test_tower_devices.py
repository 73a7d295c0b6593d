"""Towers that a host moved in part (ComfyUI's partial unload moves the smallest leaves with ``.to()``) and
the caches of towers that are gone (faults 3 and 4 of issue 13). The ``meta`` device stands in for a GPU."""

import gc

import torch

from clip_suite.clip_impl.cache import ByteLRUCache
from clip_suite.clip_impl.text.chunking import TokenChunk
from clip_suite.clip_impl.clip_skip import LayerChoice
from clip_suite.clip_impl.text.encode import encode_chunks
from clip_suite.clip_impl.towers.text import CLIP_L, TextTower

TINY = CLIP_L.with_shape(width=64, layers=2, heads=1, mlp_width=256, projection_dim=32)
IDS = torch.tensor([[49406, 320, 1125, 49407] + [49407] * 73])


def tiny_tower() -> TextTower:
    torch.manual_seed(0)
    tower = TextTower(TINY)
    for p in tower.parameters():
        torch.nn.init.normal_(p, std=0.02)
    return tower.eval().requires_grad_(False)


def test_partly_offloaded_tower_runs_on_its_device():
    """The blocks and token table on the 'GPU' (meta), the position table, final norm and projection left
    on the CPU by a partial unload: the forward runs on the tower's device instead of failing."""
    tower = tiny_tower()
    tower.text_model.encoder.to("meta")
    tower.text_model.embeddings.token_embedding.to("meta")
    assert tower.text_model.embeddings.position_embedding.weight.device.type == "cpu"
    out = tower(IDS, 2, True, pooled_rows=[0], project=True)  # the final layer: no data-dependent slicing
    assert out.hidden.device.type == "meta" and out.hidden.shape == (1, 77, 64)
    assert out.pooled.device.type == "meta" and out.pooled.shape == (1, 32)


def test_cached_encodings_go_with_their_tower():
    cache = ByteLRUCache(1 << 24)
    tower = tiny_tower()
    other = tiny_tower()
    choice = LayerChoice(layer=2, layer_norm=True, num_layers=2)
    encode_chunks(tower, [TokenChunk()], choice, {0}, cache)
    encode_chunks(other, [TokenChunk()], choice, {0}, cache)
    assert len(cache) == 2
    del tower
    gc.collect()
    assert len(cache) == 1 and cache.nbytes > 0  # only the live tower's entry is left
