"""Loading maps the encoder blocks' matrices from the file and copies them in the background (issue 12,
point 8): what is deferred, that the copies keep every value, and that nothing races them."""

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import tiny_models as tm
from clip_suite.clip_impl.text.encode import EncodeSettings, encode_prompt
from clip_suite.clip_impl.weights.loading import load_clip
from clip_suite.clip_impl.weights import apply_loras, read_lora
from clip_suite.clip_impl.towers.pending_copies import PendingCopies
from clip_suite.clip_impl.weights.files import ModelFileError
from helpers.vision_fixtures import v336_model, v_model, vg_model, vh_model, vision_dir  # noqa: F401

BLOCK_MATRICES = ("self_attn.in_proj.weight", "self_attn.out_proj.weight", "mlp.fc1.weight", "mlp.fc2.weight")
PROMPT = "a photo of a (cat:1.2) on a [red] sofa, " * 3


@pytest.fixture
def no_background(monkeypatch):
    """Copies only when something asks for them, so a test sees the state it sets up."""
    monkeypatch.setattr(PendingCopies, "start", lambda self: None)


def fresh_copy(src: Path, tmp_path: Path) -> Path:
    """The same file under a new name: a tower of its own (towers of one file are shared)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    dst = tmp_path / src.name
    dst.write_bytes(src.read_bytes())
    return dst


def block_matrices(tower) -> set[str]:
    return {n for n, _ in tower.named_parameters() if ".encoder.layers." in n and n.endswith(BLOCK_MATRICES)}


def mapped_ranges(path: Path) -> list[tuple[int, int]]:
    """Address ranges of this process that map ``path`` (Linux)."""
    real = os.path.realpath(path)
    out = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(" " + real):
            lo, hi = line.split()[0].split("-")
            out.append((int(lo, 16), int(hi, 16)))
    return out


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/self/maps")
def test_load_maps_the_block_matrices_and_converts_the_rest(model_dir, tmp_path, no_background):
    path = fresh_copy(model_dir / "sdxl.safetensors", tmp_path)  # fp16; auto on the CPU keeps fp32
    model = load_clip(path)
    ranges = mapped_ranges(path)
    assert ranges, "the file should be mapped while its tensors are pending"
    for role, tower in model.towers.items():
        params = dict(tower.named_parameters())
        deferred = block_matrices(tower)
        assert set(tower.pending.storage) == deferred and len(tower.pending) == len(deferred)
        assert all(params[n].dtype == torch.float16 for n in deferred)
        assert all(p.dtype == torch.float32 for n, p in params.items() if n not in deferred), role
        fc1 = params["text_model.encoder.layers.0.mlp.fc1.weight"]
        assert any(lo <= fc1.data_ptr() < hi for lo, hi in ranges), f"{role}: fc1 is not the file's own bytes"


def test_settling_copies_to_fp32_with_every_value(model_dir, tmp_path, no_background):
    path = fresh_copy(model_dir / "sdxl.safetensors", tmp_path)
    file = load_file(str(path))
    model = load_clip(path)
    tower = model.towers["g"]
    name = "text_model.encoder.layers.1.mlp.fc2.weight"
    loaded = tower.get_parameter(name)
    want = file["conditioner.embedders.1.model.transformer.resblocks.1.mlp.c_proj.weight"]
    final = tower.pending.final_nbytes(tower)
    tower.pending.settle()
    settled = tower.get_parameter(name)
    assert len(tower.pending) == 0 and settled is not loaded  # a new Parameter: readers of the old stay valid
    assert settled.dtype == torch.float32 and torch.equal(settled, want.float()) and torch.equal(loaded, want)
    assert all(p.dtype == torch.float32 for p in tower.parameters())
    assert final == sum(t.numel() * t.element_size() for t in tower.state_dict().values())


def test_blocks_compute_the_same_bits_before_and_after_the_copies(model_dir, tmp_path, no_background):
    """A block computes with the mapped fp16 matrices (cast per use) exactly as with its fp32 copies."""
    model = load_clip(fresh_copy(model_dir / "sdxl.safetensors", tmp_path))
    for tower in model.towers.values():
        x = torch.randn(2, 77, tower.config.width, generator=torch.Generator().manual_seed(0))
        blocks = tower.text_model.encoder.layers
        mapped = [block(x, causal=True) for block in blocks]
        tower.pending.settle()
        assert all(torch.equal(block(x, causal=True), want) for block, want in zip(blocks, mapped))


def test_a_pass_makes_the_copies_first_and_encodes_as_before(model_dir, tmp_path, no_background):
    lazy = load_clip(fresh_copy(model_dir / "sdxl.safetensors", tmp_path))
    assert all(len(t.pending) for t in lazy.towers.values())
    got = encode_prompt(lazy, PROMPT, EncodeSettings(), cache=None)
    assert all(len(t.pending) == 0 for t in lazy.towers.values()), "a pass never runs beside the copies"
    eager = load_clip(fresh_copy(model_dir / "sdxl.safetensors", tmp_path / "again"), precision="fp32")
    for t in eager.towers.values():
        t.pending.settle()
    want = encode_prompt(eager, PROMPT, EncodeSettings(), cache=None)
    assert torch.equal(got.cond, want.cond) and torch.equal(got.pooled, want.pooled)


def wait_for(condition, seconds=60.0):
    import time

    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_loading_starts_the_copies_in_the_background(model_dir, tmp_path):
    model = load_clip(fresh_copy(model_dir / "sdxl.safetensors", tmp_path))
    towers = list(model.towers.values())
    wait_for(lambda: all(len(t.pending) == 0 for t in towers))  # nothing used the towers meanwhile
    assert all(p.dtype == torch.float32 for t in towers for p in t.parameters())


def test_only_exact_conversions_are_deferred(tmp_path, l_model, no_background):
    """An fp32 file under auto is rounded through fp16 at load (a copy cannot wait: the mapped values are
    not the ones the tower computes with); precision fp32 keeps the file's fp32 tensors as they are."""
    tm.save(tmp_path / "clip_l_fp32.safetensors", tm.hf_state(l_model), half=False)
    auto = load_clip(tmp_path / "clip_l_fp32.safetensors").towers["l"]
    assert len(auto.pending) == 0 and all(p.dtype == torch.float32 for p in auto.parameters())
    exact = load_clip(tmp_path / "clip_l_fp32.safetensors", precision="fp32").towers["l"]
    assert set(exact.pending.storage) == block_matrices(exact)
    half = load_clip(tmp_path / "clip_l_fp32.safetensors", precision="fp16").towers["l"]
    assert len(half.pending) == 0 and all(p.dtype == torch.float16 for p in half.parameters())


@pytest.mark.parametrize("name", ["mlp.fc1.weight", "self_attn.out_proj.weight", "self_attn.q_proj.weight"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_in_a_deferred_matrix_is_refused_at_load(tmp_path, l_model, name, bad):
    sd = tm.hf_state(l_model)
    sd[f"text_model.encoder.layers.2.{name}"][3, 5] = bad
    tm.save(tmp_path / "broken.safetensors", sd)
    key = "in_proj" if "q_proj" in name else name.rsplit(".", 1)[0]
    with pytest.raises(ModelFileError, match=rf"broken.safetensors: tensor .*layers\.2\..*{key}.* holds NaN or infinite"):
        load_clip(tmp_path / "broken.safetensors")


def test_fp32_values_that_overflow_fp16_are_refused_under_auto(tmp_path, l_model):
    sd = tm.hf_state(l_model)
    sd["text_model.encoder.layers.1.mlp.fc2.weight"][0, 0] = 1e6  # finite in fp32, inf once rounded to fp16
    tm.save(tmp_path / "big.safetensors", sd, half=False)
    with pytest.raises(ModelFileError, match=r"big.safetensors: tensor .*fc2.weight holds NaN or infinite"):
        load_clip(tmp_path / "big.safetensors")
    assert load_clip(tmp_path / "big.safetensors", precision="fp32").towers["l"] is not None


def test_a_parameter_moved_meanwhile_is_left_alone(model_dir, tmp_path, no_background):
    tower = load_clip(fresh_copy(model_dir / "sd15.safetensors", tmp_path)).towers["l"]
    mlp = tower.text_model.encoder.layers[0].mlp
    moved = torch.nn.Parameter(mlp.fc1.weight.detach().to(torch.float64), requires_grad=False)
    mlp.fc1.weight = moved  # a new Parameter
    attn = tower.text_model.encoder.layers[0].self_attn
    with tower.pending.hold():  # what a host's move does: new data in the same Parameter
        attn.out_proj.weight.data = attn.out_proj.weight.data.to(torch.float64)
    tower.pending.settle()
    assert mlp.fc1.weight is moved and attn.out_proj.weight.dtype == torch.float64
    assert mlp.fc2.weight.dtype == torch.float32


def test_vision_towers_defer_their_blocks_too(vision_dir, tmp_path, no_background):
    model = load_clip(fresh_copy(vision_dir / "clip_hf.safetensors", tmp_path))
    vision = model.vision
    assert set(vision.pending.storage) == block_matrices(vision) and len(vision.pending) > 0
    x = torch.randn(2, 17, vision.config.width, generator=torch.Generator().manual_seed(0))
    mapped = [block(x, causal=False) for block in vision.vision_model.encoder.layers]
    pixels = torch.rand(2, 3, vision.config.image_size, vision.config.image_size)
    assert vision(pixels).dtype == torch.float32 and len(vision.pending) == 0
    assert all(p.dtype == torch.float32 for p in vision.parameters())
    assert all(torch.equal(b(x, causal=False), m) for b, m in zip(vision.vision_model.encoder.layers, mapped))


def test_a_lora_on_a_fresh_load_shares_the_settled_tensors(model_dir, tmp_path, l_model, no_background):
    from test_lora import kohya_keys, random_modules

    modules = random_modules(128, 4, rank=4, seed=7, targets=("q", "k", "v", "out"))
    save_file(kohya_keys("lora_te", modules, alpha=2), str(tmp_path / "lora.safetensors"))
    model = load_clip(fresh_copy(model_dir / "sd15.safetensors", tmp_path))
    patched = apply_loras(model, [(read_lora(tmp_path / "lora.safetensors"), 1.0)]).model
    base, mine = model.towers["l"], patched.towers["l"]
    assert len(base.pending) == 0 and all(p.dtype == torch.float32 for p in mine.parameters())
    fc1 = "text_model.encoder.layers.0.mlp.fc1.weight"  # the LoRA touches attention only
    assert mine.get_parameter(fc1).data_ptr() == base.get_parameter(fc1).data_ptr()


def test_encodes_racing_the_background_copies_agree(model_dir, tmp_path):
    want = encode_prompt(load_clip(model_dir / "sdxl.safetensors"), PROMPT, EncodeSettings(), cache=None)
    for attempt in range(3):
        model = load_clip(fresh_copy(model_dir / "sdxl.safetensors", tmp_path / str(attempt)))  # copies start
        got, errors = [], []

        def run():
            try:
                got.append(encode_prompt(model, PROMPT, EncodeSettings(), cache=None))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=run) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(got) == 3
        for out in got:
            assert torch.equal(out.cond, want.cond) and torch.equal(out.pooled, want.pooled)
        assert all(len(t.pending) == 0 for t in model.towers.values())


def test_a_process_that_exits_during_the_copies_exits_cleanly(model_dir, tmp_path):
    """The background copies stop at interpreter exit between tensors (a torch op cut off there aborts)."""
    path = fresh_copy(model_dir / "sdxl.safetensors", tmp_path)
    code = f"from clip_suite.clip_impl.weights.loading import load_clip\nload_clip({str(path)!r})\nprint('loaded')\n"
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stdout.strip() == "loaded", out.stderr[-2000:]


def test_a_deep_copy_keeps_its_copies_pending_and_apart(model_dir, tmp_path, no_background):
    import copy
    import pickle

    model = load_clip(fresh_copy(model_dir / "sd15.safetensors", tmp_path))
    tower = model.towers["l"]
    twin = copy.deepcopy(tower)
    assert len(twin.pending) == len(tower.pending) > 0
    twin.pending.settle()
    name = "text_model.encoder.layers.0.mlp.fc1.weight"
    assert twin.get_parameter(name).dtype == torch.float32 and tower.get_parameter(name).dtype == torch.float16
    assert len(tower.pending) > 0
    again = pickle.loads(pickle.dumps(tower))
    assert len(tower.pending) == 0 and len(again.pending) == 0
    assert torch.equal(again.get_parameter(name), twin.get_parameter(name))


def test_copies_made_inside_inference_mode_are_plain_tensors(model_dir, tmp_path, no_background):
    """ComfyUI runs nodes under inference_mode: a pass there must not leave inference tensors behind,
    which nothing could update in place afterwards."""
    model = load_clip(fresh_copy(model_dir / "sd15.safetensors", tmp_path))
    with torch.inference_mode():
        encode_prompt(model, PROMPT, EncodeSettings(), cache=None)
    fc1 = model.towers["l"].text_model.encoder.layers[0].mlp.fc1.weight
    assert not fc1.is_inference()
    with torch.no_grad():
        fc1[0, 0] += 1.0
