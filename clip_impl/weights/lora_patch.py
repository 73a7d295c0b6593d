"""Text-encoder LoRA patching: place a LoRA's modules on a model's towers and build patched copies.

The maths is ComfyUI's (``comfy/weight_adapter/lora.py`` ``LoRAAdapter.calculate_weight``, applied by
``comfy/model_patcher.py`` ``patch_weight_to_device``), which is kohya's: for a Linear weight W (out, in)
with factors up U (out, r) and down D (r, in) and the file's ``alpha`` (r when absent),

    W' = W + strength * (alpha / r) * (U @ D)

computed in fp32 from the stored weight, all LoRAs of a chain added in order, then rounded once to the
dtype the weight is stored in (fp16 in ComfyUI's default, so ``precision auto`` rounds through fp16 too).

Our towers fuse q, k and v into ``self_attn.in_proj`` (rows q, then k, then v): a q/k/v patch adds to its
third of the rows. Patched towers are NEW towers (their own ``cache_id``); the unpatched towers are never
changed, and the patched ones share every tensor the LoRA does not touch. Reading the files is
:mod:`.lora_keys`.
"""


from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass

import torch

from ..clip_skip import TOWER_LABELS
from ..model import ClipModel
from ..towers.text import TextTower
from .assembly import convert_weights

from .lora_keys import LoraModule, TextEncoderLora

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- mapping
def tower_for(encoder: str, roles) -> str | None:
    """Which of a model's towers (``roles``: "l", "g", "h") an encoder prefix patches, ComfyUI's map
    (``comfy/lora.py`` ``model_lora_keys_clip``); None when the model has no such tower."""
    roles = set(roles)
    if encoder in ("clip_l", "clip_g", "clip_h"):
        role = encoder[-1]
        return role if role in roles else None
    first = "l" if "l" in roles else "h" if "h" in roles else None
    if encoder == "te1":
        return first
    if encoder in ("te", "text_encoder"):
        return first or ("g" if "g" in roles else None)
    if encoder in ("te2", "text_encoder_2"):
        return "g" if {"l", "g"} <= roles else None
    if encoder == "prior_te":
        return "g" if "g" in roles and "l" not in roles else None
    return None


@dataclass(frozen=True, eq=False)
class TowerPatch:
    """A module placed on a tower: the parameter it adds to, and the rows (q/k/v thirds of in_proj)."""

    param: str
    rows: tuple[int, int] | None
    module: LoraModule


def _target_param(module: LoraModule, tower: TextTower) -> tuple[str, tuple[int, int] | None, tuple[int, int]] | None:
    """(our parameter, rows, expected (out, in)) for a module on a tower; None when the layer does not exist."""
    cfg = tower.config
    c = cfg.width
    if module.target == "proj":
        if tower.text_projection is None:
            return None
        return "text_projection.weight", None, tuple(tower.text_projection.weight.shape)
    if not 0 <= module.layer < cfg.layers:
        return None
    base = f"text_model.encoder.layers.{module.layer}."
    if module.target in ("q", "k", "v"):
        i = "qkv".index(module.target)
        return base + "self_attn.in_proj.weight", (i * c, (i + 1) * c), (c, c)
    return {
        "out": (base + "self_attn.out_proj.weight", None, (c, c)),
        "fc1": (base + "mlp.fc1.weight", None, (cfg.mlp_width, c)),
        "fc2": (base + "mlp.fc2.weight", None, (c, cfg.mlp_width)),
    }[module.target]


def plan(lora: TextEncoderLora, model: ClipModel) -> tuple[dict[str, list[TowerPatch]], list[str]]:
    """Place a LoRA's modules on a model's towers: ({tower: [TowerPatch]}, names of modules left out).

    A module whose factors do not fit the tower's weight is an error: the LoRA is for another model.
    """
    patches: dict[str, list[TowerPatch]] = {}
    left_out = []
    for module in lora.modules:
        role = tower_for(module.encoder, model.towers)
        target = _target_param(module, model.towers[role]) if role else None
        if target is None:
            left_out.append(module.name)
            continue
        param, rows, (out_dim, in_dim) = target
        if (module.up.shape[0], module.down.shape[1]) != (out_dim, in_dim):
            tower = model.towers[role]
            raise ValueError(
                f"LoRA {lora.name}: {module.name} patches a {module.down.shape[1]}->{module.up.shape[0]} layer, "
                f"but this model's {TOWER_LABELS.get(role, role)} text encoder ({tower.config.width} wide) has "
                f"{in_dim}->{out_dim}: the LoRA is for another model ({model.family.label} here)"
            )
        patches.setdefault(role, []).append(TowerPatch(param, rows, module))
    return patches, left_out


# ---------------------------------------------------------------------------------------- patching
_PATCHED: "weakref.WeakValueDictionary[tuple, TextTower]" = weakref.WeakValueDictionary()
# patched tower -> {parameter name: weak reference to the original tensor it shares}
_SHARED_WITH: "weakref.WeakKeyDictionary[TextTower, dict]" = weakref.WeakKeyDictionary()
_PATCHED_LOCK = threading.Lock()


@dataclass
class LoraResult:
    """A model with LoRAs applied, and what to tell the user (one line each)."""

    model: ClipModel
    notes: list[str]
    warnings: list[str]


def patched_weights(tower: TextTower, patches: list[tuple[TowerPatch, float]]) -> dict[str, torch.Tensor]:
    """fp32 weights of the parameters ``patches`` touch: W + sum of strength * alpha/r * (up @ down),
    in chain order, on the tower's device (not yet rounded to the storage dtype)."""
    params = dict(tower.named_parameters())
    out: dict[str, torch.Tensor] = {}
    for patch, strength in patches:
        if patch.param not in out:
            out[patch.param] = params[patch.param].detach().to(torch.float32, copy=True)
        w = out[patch.param]
        target = w[patch.rows[0] : patch.rows[1]] if patch.rows else w
        m = patch.module
        up = m.up.to(device=w.device, dtype=torch.float32)
        down = m.down.to(device=w.device, dtype=torch.float32)
        # The same expression as ComfyUI's, so the fp32 sums (and their fp16 rounding) agree bit for bit.
        target += ((strength * m.scale) * torch.mm(up, down)).to(torch.float32)
    return out


def build_patched_tower(
    tower: TextTower, patches: list[tuple[TowerPatch, float]], precision: str, device, label: str
) -> TextTower:
    """A new tower: ``tower``'s weights with ``patches`` added, rounded like the originals were stored
    (``precision`` auto: through fp16, as ComfyUI stores them; then the tower's storage dtype)."""
    device = torch.device(device)
    tower.pending.settle()  # the copies share the original's tensors: its own memory, not the file's
    new = patched_weights(tower, patches)
    storage = {name: p.dtype for name, p in tower.named_parameters()}
    for name in new:
        one = {name: new[name]}
        convert_weights(one, precision, device, storage[name], f"{tower.source} with {label}")
        new[name] = one[name]
    state = {}
    originals = {}
    for name, p in tower.state_dict(keep_vars=True).items():
        # Untouched tensors are shared (a new Parameter over the same storage, so moving one tower
        # between devices never moves the other).
        state[name] = new[name] if name in new else p.detach().to(device)
        if name not in new:
            originals[name] = weakref.ref(p)
    with torch.device("meta"):
        patched = TextTower(tower.config, source=f"{tower.source} + {label}", compute_dtype=tower.compute_dtype)
    patched.load_state_dict(state, strict=True, assign=True)
    patched.eval().requires_grad_(False)
    _SHARED_WITH[patched] = originals
    return patched


def reshare(module: torch.nn.Module) -> int:
    """Point the untouched tensors of LoRA-patched towers in ``module`` back at their originals' storage.

    Moving a tower (``Module.to``, as a host does to load and offload it) gives every tensor new
    storage, so after a round trip a patched tower would hold a second copy of the weights it shares.
    A host calls this after moving towers; tensors whose original is gone, elsewhere, or of another
    dtype are left alone. Returns how many tensors were re-shared.
    """
    count = 0
    for tower in module.modules():
        originals = _SHARED_WITH.get(tower)
        if not originals:
            continue
        params = dict(tower.named_parameters())
        for name, ref in originals.items():
            original, mine = ref(), params.get(name)
            if original is None or mine is None or mine.data_ptr() == original.data_ptr():
                continue
            same_place = original.device == mine.device and original.dtype == mine.dtype
            if same_place and original.shape == mine.shape:
                mine.data = original.data
                count += 1
    return count


def apply_loras(model: ClipModel, loras: list[tuple[TextEncoderLora, float]], device=None) -> LoraResult:
    """``model`` with ``loras`` ((lora, strength), in order) applied to its text towers.

    A model that already carries LoRAs (from this function) gets the new ones appended to its chain and
    recomputed from the unpatched towers, so a chain rounds once, as ComfyUI's LoraLoader chains do.
    Towers the chain does not touch are shared with ``model``; ``device``: where new towers live
    (default: where each tower is). Raises ValueError when a LoRA is for another model.
    """
    previous = model.extra.get("lora")
    base, chain = (previous["base"](), list(previous["chain"])) if previous else (model, [])
    if base is None:
        raise ValueError(
            "this CLIP carries LoRAs, and the model they were applied to is no longer loaded: run its loader "
            "again (queue the workflow again) before adding another LoRA"
        )
    notes, warnings = [], []
    placed = {id(lora): plan(lora, base)[0] for lora, _ in chain}
    for lora, strength in loras:
        patches, left_out = plan(lora, base)
        placed[id(lora)] = patches
        what = _describe(lora, patches, strength)
        if not patches and not lora.modules:
            warnings.append(
                f"LoRA {lora.name} has no text-encoder weights (it only changes the diffusion model): the CLIP "
                "is unchanged. Apply it to the MODEL with LoraLoaderModelOnly"
            )
            continue
        if not patches:
            raise ValueError(
                f"LoRA {lora.name}: none of its {len(lora.modules)} text-encoder layers fit {base.family.label} "
                f"(e.g. {left_out[0]}): the LoRA is for another model"
            )
        if left_out or lora.unused:
            skipped = left_out + lora.unused
            warnings.append(
                f"LoRA {lora.name}: {len(skipped)} text-encoder keys not applied, this model has no such layer "
                f"(e.g. {skipped[0]}); ComfyUI leaves them out too"
            )
            log.warning(warnings[-1])
        notes.append(what)
        if strength != 0:
            chain.append((lora, float(strength)))
    if not chain:
        return LoraResult(base, notes, warnings)
    towers = {}
    for role, tower in base.towers.items():
        patches = [(p, s) for lora, s in chain for p in placed[id(lora)].get(role, ())]
        towers[role] = _cached_tower(tower, chain, role, patches, base.precision, device) if patches else tower
    # A weak reference: the patched model must not keep the unpatched one (and its memory) alive.
    extra = {**base.extra, "lora": {"base": weakref.ref(base), "chain": tuple(chain)}}
    sources = base.sources + tuple(str(lora.path) for lora, _ in chain)
    patched = ClipModel(
        base.family, towers, base.vision, sources, base.precision, extra, logit_scale_source=base.logit_scale_source
    )
    return LoraResult(patched, notes, warnings)


def _cached_tower(tower: TextTower, chain, role: str, patches, precision: str, device) -> TextTower:
    """The patched tower for (tower, chain), built once while anything holds it."""
    device = torch.device(device) if device is not None else tower.device
    identity = tuple((lora.key, strength) for lora, strength in chain)
    key = (tower.cache_id, identity, role, precision, str(device))
    label = " + ".join(f"LoRA {lora.name}:{strength:g}" for lora, strength in chain)
    with _PATCHED_LOCK:
        patched = _PATCHED.get(key)
        if patched is None:
            patched = build_patched_tower(tower, patches, precision, device, label)
            _PATCHED[key] = patched
    return patched


def _describe(lora: TextEncoderLora, patches: dict, strength: float) -> str:
    parts = ", ".join(f"{TOWER_LABELS.get(r, r)} {len(p)} weights" for r, p in patches.items())
    ranks = sorted({p.module.rank for ps in patches.values() for p in ps})
    rank = f", rank {ranks[0]}" if len(ranks) == 1 else f", ranks {ranks[0]}-{ranks[-1]}" if ranks else ""
    return f"LoRA {lora.name} at strength {strength:g}: {parts or 'nothing'}{rank}"
