"""Run ComfyUI in this process: its node registry with our pack loaded, and API-format graphs executed by
its own ``execution.PromptExecutor`` (validation, caching, model management and all).

Our pack is loaded the way ComfyUI loads any custom node (``nodes.load_custom_node`` on a folder), so the
pack's modules live under ComfyUI's module name for it, not under ``clip_suite``: use :attr:`Comfy.pack`
to reach them (``comfy.pack_module("nodes.host")``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
LONG_PROMPT = (
    "masterpiece, best quality, a (small:1.2) cat sitting in a garden full of ((red roses)), oil painting, "
    "highly detailed, soft morning light, (blurry:0.7), by a famous painter, trending on an art site, "
    "warm colours, wide angle, depth of field, golden hour, a wooden fence and a blue door in the background, "
    "(an old stone house:1.1) with ivy on its walls, a sleepy dog on the porch, clouds drifting over distant hills"
)  # 86 tokens: two chunks, the first cut inside a weighted group (no BREAK: ComfyUI's own encoders lack it)
MODEL_FILES = {  # ComfyUI model folder -> names of full-size test files (tests/full_size.py)
    "checkpoints": ["sd15_te.safetensors", "sdxl_te.safetensors", "sd2_te.safetensors", "sdxl_refiner_te.safetensors"],
    "text_encoders": ["clip_l.safetensors", "clip_g.safetensors", "clip_h.safetensors"],
    "clip_vision": [],
}


# Our encoders' remaining inputs at their defaults, and CLIPTextEncodeSDXL's default sizes, as graphs spell them.
ENCODE = dict(chunking="comfy", comma_backtrack=20, weighting="comfy", pooled="first_chunk", empty_prompt="encode")
SIZES = dict(width=1024, height=1024, crop_w=0, crop_h=0, target_width=1024, target_height=1024)


def clip_loader(name: str) -> dict:
    """ComfyUI's CLIPLoader on a ``text_encoders`` file, type stable_diffusion (SD1.x, SD2.x, refiner)."""
    return {"class_type": "CLIPLoader", "inputs": {"clip_name": name, "type": "stable_diffusion", "device": "default"}}


def suite_loader(model: str) -> dict:
    """Our loader on one file (``folder/name``), every other input at its default."""
    return {"class_type": "ClipSuiteLoader",
            "inputs": {"model": model, "model_2": "none", "architecture": "auto", "precision": "auto", "device": "auto"}}


def suite_encode(clip_node: str, text: str, clip_skip: int = 0, **options) -> dict:
    """ClipSuiteTextEncode on output 0 of ``clip_node``; ``options`` override :data:`ENCODE`."""
    return {"class_type": "ClipSuiteTextEncode",
            "inputs": {"clip": [clip_node, 0], "text": text, "clip_skip": clip_skip, **ENCODE, **options}}


def suite_encode_sdxl(clip_node: str, text: str, clip_skip: int = 0) -> dict:
    """ClipSuiteTextEncodeSDXL with one prompt (text_l empty), clip_skip on both towers, default sizes."""
    return {"class_type": "ClipSuiteTextEncodeSDXL", "inputs": {
        "clip": [clip_node, 0], "text_g": text, "text_l": "", "clip_skip": clip_skip, "clip_skip_applies_to": "both",
        **ENCODE, **SIZES}}


def model_folders(root: Path, build) -> dict[str, Path]:
    """ComfyUI model folders under ``root`` holding symlinks to the cached full-size test files."""
    out = {}
    for folder, names in MODEL_FILES.items():
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        for name in names:
            link = d / name
            if not link.exists():
                os.symlink(build(name), link)
        out[folder] = d
    return out


def pack_folder(root: Path) -> Path:
    """A custom_nodes folder with our repository linked in under the name users clone it as."""
    d = root / "custom_nodes"
    d.mkdir(parents=True, exist_ok=True)
    link = d / "comfyui-clip-suite"
    if not link.exists():
        os.symlink(REPO, link)
    return link


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def comfyui_server(comfy_path, tmp: Path, folders: dict, timeout_s: float = 300):
    """A real ComfyUI (``main.py --cpu`` on a free port) with our pack listed under ``custom_nodes:`` in an
    extra model paths file naming ``folders``; everything it writes goes to ``tmp/base``. Yields
    ``(url, log_path)`` once ``/system_stats`` answers; stops the server on exit."""
    import pytest

    pack = pack_folder(tmp)
    config = tmp / "extra_model_paths.yaml"
    lines = ["clip_suite_tests:"] + [f"    {name}: {path}" for name, path in folders.items()]
    config.write_text("\n".join(lines + [f"    custom_nodes: {pack.parent}", ""]))
    (tmp / "base" / "custom_nodes").mkdir(parents=True)  # main.py lists it before anything else
    port = _free_port()
    log_path = tmp / "comfyui.log"
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--extra-model-paths-config", str(config), "--base-directory", str(tmp / "base"), "--disable-api-nodes"]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=comfy_path, stdout=log, stderr=subprocess.STDOUT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + timeout_s
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"ComfyUI exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
                try:
                    urllib.request.urlopen(f"{url}/system_stats", timeout=5).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        pytest.fail(f"ComfyUI did not answer within {timeout_s:.0f} s:\n{log_path.read_text()[-4000:]}")
                    time.sleep(1)
            yield url, log_path
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class ServerStub:
    """What PromptExecutor needs from ComfyUI's PromptServer; records the events it sends."""

    def __init__(self):
        self.client_id = "tests"
        self.last_node_id = None
        self.sockets_metadata: dict = {}
        self.events: list[tuple[str, dict]] = []

    def send_sync(self, event, data, sid=None):
        self.events.append((event, data))


@dataclass
class RunResult:
    """What one graph run did: node ids executed and served from cache, and the wall time."""

    executed: list[str]
    cached: list[str]
    seconds: float
    errors: list = field(default_factory=list)


class Comfy:
    """ComfyUI's registry and executor, in process, with our pack and any test-only nodes loaded."""

    def __init__(self, comfy_path: Path, tmp: Path, build):
        import utils.extra_config  # noqa: F401  (must come before `import nodes`: see DESIGN 9)
        import folder_paths

        for name, d in model_folders(tmp, build).items():
            folder_paths.add_model_folder_path(name, str(d), is_default=True)
        for setter, sub in ((folder_paths.set_output_directory, "output"), (folder_paths.set_temp_directory, "temp"),
                            (folder_paths.set_input_directory, "input"), (folder_paths.set_user_directory, "user")):
            (tmp / sub).mkdir(exist_ok=True)
            setter(str(tmp / sub))
        import comfy.model_management
        import execution
        import nodes

        self.nodes, self.execution, self.mm, self.folder_paths = nodes, execution, comfy.model_management, folder_paths
        extras = comfy_path / "comfy_extras"
        for extra in ("nodes_clip_sdxl.py", "nodes_preview_any.py"):
            assert asyncio.run(nodes.load_custom_node(str(extras / extra), module_parent="comfy_extras")), extra
        self.pack_path = pack_folder(tmp)
        self.pack_loaded = asyncio.run(nodes.load_custom_node(str(self.pack_path)))
        self.pack_name = str(self.pack_path).replace(".", "_x_")  # ComfyUI's module name for a folder
        self.server = ServerStub()
        self.executor = execution.PromptExecutor(self.server)

    def pack_module(self, dotted: str):
        return sys.modules[f"{self.pack_name}.{dotted}"]

    def register(self, node_id: str, cls) -> None:
        self.nodes.NODE_CLASS_MAPPINGS[node_id] = cls

    def run(self, graph: dict) -> RunResult:
        """Validate and execute an API-format graph; raises AssertionError with ComfyUI's errors."""
        valid, error, outputs, node_errors = asyncio.run(self.execution.validate_prompt("test", graph, None))
        assert valid, f"ComfyUI refused the graph: {error} {node_errors}"
        self.server.events.clear()
        start = time.perf_counter()
        self.executor.execute(graph, "test", {"client_id": self.server.client_id}, outputs)
        seconds = time.perf_counter() - start
        errors = [d for e, d in self.server.events if e == "execution_error"]
        assert self.executor.success and not errors, f"execution failed: {errors}"
        executed = [d["node"] for e, d in self.server.events if e == "executing" and d.get("node") is not None]
        cached = [n for e, d in self.server.events if e == "execution_cached" for n in d["nodes"]]
        return RunResult(executed, cached, seconds)

    def output(self, node_id: str, index: int = 0):
        """Output ``index`` of a node in the last run (the value, not ComfyUI's per-batch list)."""
        values = self.executor.caches.outputs.get(node_id)
        assert values is not None, f"node {node_id} has no output in the cache"
        return values[index][0]

    def ui(self, node_id: str) -> dict:
        entry = self.executor.caches.ui.get(node_id)
        return entry["output"] if entry else {}

    def release(self) -> None:
        """Drop every cached output and model of previous runs."""
        self.executor.reset()
        gc.collect()
        self.mm.unload_all_models()
        self.mm.cleanup_models_gc()
        gc.collect()


def sink(*node_ids: str) -> dict:
    """The test-only output node, fed from output 0 of each of ``node_ids``."""
    return {"class_type": "ClipSuiteTestSink", "inputs": {f"c{i}": [n, 0] for i, n in enumerate(node_ids)}}


class ClipSuiteTestSink:
    """Output node for tests: takes up to 8 CONDITIONINGs and does nothing (ComfyUI needs an output)."""

    CATEGORY = "tests"
    RETURN_TYPES = ()
    FUNCTION = "take"
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"optional": {f"c{i}": ("CONDITIONING",) for i in range(8)}}

    def take(self, **kwargs):
        return {}


class ClipSuiteTestClipLora:
    """Test-only LoRA: random low-rank patches on a few CLIP-L weights, applied by ComfyUI's own loader."""

    CATEGORY = "tests"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"clip": ("CLIP",), "seed": ("INT", {"default": 0}), "strength": ("FLOAT", {"default": 1.0})}}

    def apply(self, clip, seed, strength):
        import comfy.sd

        g = torch.Generator().manual_seed(seed)
        lora = {}
        for layer, part, shape in ((2, "mlp_fc1", (3072, 768)), (5, "self_attn_q_proj", (768, 768)),
                                   (9, "self_attn_out_proj", (768, 768))):
            key = f"lora_te_text_model_encoder_layers_{layer}_{part}"
            lora[f"{key}.lora_up.weight"] = torch.randn(shape[0], 4, generator=g) * 0.05
            lora[f"{key}.lora_down.weight"] = torch.randn(4, shape[1], generator=g) * 0.05
        _model, patched = comfy.sd.load_lora_for_models(None, clip, lora, 0.0, strength)
        return (patched,)


class ClipSuiteTestLoraLoaderClip:
    """Test-only: ComfyUI's real LoraLoader.load_lora on a CLIP, without a diffusion model."""

    CATEGORY = "tests"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        import folder_paths

        return {"required": {"clip": ("CLIP",), "lora_name": (folder_paths.get_filename_list("loras"),),
                             "strength_clip": ("FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0})}}

    def apply(self, clip, lora_name, strength_clip):
        import nodes

        _model, patched = nodes.LoraLoader().load_lora(None, clip, lora_name, 0.0, strength_clip)
        return (patched,)


def assert_conditioning_close(ours, ref, what: str, rel: float = 1e-5) -> float:
    """max|ours - ref| <= rel * max|ref| for cond and pooled; the same extra keys. Returns the worst ratio."""
    assert len(ours) == len(ref) == 1, f"{what}: one conditioning entry expected"
    (c_ours, d_ours), (c_ref, d_ref) = ours[0], ref[0]
    worst = 0.0
    for name, a, b in (("cond", c_ours, c_ref), ("pooled", d_ours["pooled_output"], d_ref["pooled_output"])):
        assert a.shape == b.shape and a.dtype == b.dtype, f"{what} {name}: {a.shape}/{a.dtype} vs {b.shape}/{b.dtype}"
        scale = b.abs().max().item()
        diff = (a - b).abs().max().item()
        worst = max(worst, diff / scale)
        assert diff <= rel * scale, f"{what} {name}: max|diff| {diff:.3g} > {rel:g} x max|ref| {scale:.3g}"
    assert {k: v for k, v in d_ours.items() if k != "pooled_output"} == {
        k: v for k, v in d_ref.items() if k != "pooled_output"
    }, f"{what}: conditioning keys differ"
    return worst
