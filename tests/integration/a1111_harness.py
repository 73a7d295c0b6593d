"""Run AUTOMATIC1111 1.10's own prompt code on a transformers CLIP-L, as the reference for our a1111 modes.

A1111's files are not part of this repository and are never copied into it: ``A1111_MODULES`` names a
folder holding A1111 1.10's ``prompt_parser.py``, ``sd_hijack_clip.py`` and ``sd_emphasis.py`` (from
lllyasviel/stable-diffusion-webui-forge commit e26abf87 "Gradio 4 + WebUI 1.10", ``modules/``). They are
loaded at run time as the package ``modules``, next to small stand-ins for the webui modules they import
(``modules.shared``, ``modules.devices``, ``modules.sd_hijack``); :func:`load` removes everything again.

Only the parts of the stand-ins that ``tokenize_line``/``forward`` read are provided: the options below,
the CPU device, and a hijack whose embedding database finds no textual-inversion embeddings.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types
import warnings
from pathlib import Path

A1111_FILES = ("prompt_parser.py", "sd_hijack_clip.py", "sd_emphasis.py")
_LOADED = ("modules.prompt_parser", "modules.sd_emphasis", "modules.sd_hijack_clip")


def modules_dir() -> Path | None:
    """The folder named by ``A1111_MODULES`` (or its ``modules/`` subfolder) if it holds A1111's files."""
    value = os.environ.get("A1111_MODULES")
    if not value:
        return None
    for folder in (Path(value), Path(value) / "modules"):
        if all((folder / f).is_file() for f in A1111_FILES):
            return folder.resolve()
    return None


class Options(types.SimpleNamespace):
    """``modules.shared.opts``: A1111 1.10's defaults for every option the prompt code reads."""

    def __init__(self):
        super().__init__(
            emphasis="Original",
            comma_padding_backtrack=20,
            CLIP_stop_at_last_layers=1,
            use_old_emphasis_implementation=False,
            textual_inversion_add_hashes_to_infotext=True,
            sdxl_clip_l_skip=False,
        )


class _NoEmbeddings:
    """A textual-inversion database that knows no embeddings."""

    def find_embedding_at_position(self, tokens, offset):
        return None, None


class Hijack:
    """``modules.sd_hijack.model_hijack``: what ``TextConditionalModel`` reads and writes on it."""

    def __init__(self):
        self.embedding_db = _NoEmbeddings()
        self.fixes = None
        self.extra_generation_params = {}


def _stub_modules(folder: Path, opts: Options, hijack: Hijack) -> dict[str, types.ModuleType]:
    import torch

    package = types.ModuleType("modules")
    package.__path__ = [str(folder)]
    shared = types.ModuleType("modules.shared")
    shared.opts = opts
    devices = types.ModuleType("modules.devices")
    devices.device = torch.device("cpu")
    devices.torch_npu_set_device = lambda: None
    sd_hijack = types.ModuleType("modules.sd_hijack")
    sd_hijack.model_hijack = hijack
    package.shared, package.devices, package.sd_hijack = shared, devices, sd_hijack
    stubs = {"modules": package, "modules.shared": shared, "modules.devices": devices, "modules.sd_hijack": sd_hijack}
    try:
        import lark  # noqa: F401  (A1111's prompt_parser builds its scheduling grammar at import)
    except ImportError:
        # Prompt scheduling is not under test; a grammar object that is never used is enough.
        lark = types.ModuleType("lark")
        lark.Lark = lambda *args, **kwargs: None
        stubs["lark"] = lark
    return stubs


def _restore(saved: dict) -> None:
    """Put back the modules ``saved`` maps (name -> module, None: it was not imported)."""
    for name, module in saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


@contextlib.contextmanager
def load(folder: Path):
    """Import A1111's modules from ``folder``; yields (prompt_parser, sd_hijack_clip, opts, hijack)."""
    opts, hijack = Options(), Hijack()
    # Only what is stubbed is saved and restored: a real lark imported here stays imported whole (popping its
    # package but not its submodules would leave a later "import lark" without lark.exceptions).
    stubs = _stub_modules(folder, opts, hijack)
    saved = {name: sys.modules.get(name) for name in (*stubs, *_LOADED)}
    try:
        for name in _LOADED:
            sys.modules.pop(name, None)
        sys.modules.update(stubs)
        with warnings.catch_warnings():  # A1111's docstrings hold invalid escapes like '\('
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", SyntaxWarning)
            parser = importlib.import_module("modules.prompt_parser")
            clip = importlib.import_module("modules.sd_hijack_clip")
        yield parser, clip, opts, hijack
    finally:
        _restore(saved)


@contextlib.contextmanager
def load_prompt_modules(folder: Path):
    """A1111's ``prompt_parser`` (with the real lark grammar library) and ``extra_networks`` from ``folder``,
    imported as ``modules.*`` next to a stand-in ``modules.errors``; yields (prompt_parser, extra_networks)."""
    import lark  # noqa: F401  (test-only dependency: A1111's schedule grammar)

    names = ("modules", "modules.errors", "modules.prompt_parser", "modules.extra_networks")
    saved = {name: sys.modules.get(name) for name in names}
    try:
        for name in names:
            sys.modules.pop(name, None)
        package = types.ModuleType("modules")
        package.__path__ = [str(folder)]
        errors = types.ModuleType("modules.errors")
        errors.display = lambda e, task, **kwargs: None
        package.errors = errors
        sys.modules.update({"modules": package, "modules.errors": errors})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", SyntaxWarning)
            parser = importlib.import_module("modules.prompt_parser")
            networks = importlib.import_module("modules.extra_networks")
        yield parser, networks
    finally:
        _restore(saved)


class Wrapped:
    """What A1111 wraps: ldm's FrozenCLIPEmbedder, i.e. a transformers tokenizer and ``CLIPTextModel``."""

    def __init__(self, tokenizer, transformer):
        self.tokenizer = tokenizer
        self.transformer = transformer


def legacy_text_model(model):
    """A transformers ``CLIPTextModel`` as A1111 calls it: ``transformer(input_ids=..., output_hidden_states=...)``
    and ``transformer.text_model.final_layer_norm``.

    Up to transformers 4.x ``CLIPTextModel`` held the encoder as ``.text_model``; from 5.0 it is the encoder
    itself, so we add that one attribute level back instead of touching A1111's code.
    """
    import torch

    if hasattr(model, "text_model"):
        return model

    class LegacyCLIPTextModel(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.text_model = inner

        def forward(self, **kwargs):
            return self.text_model(**kwargs)

    return LegacyCLIPTextModel(model).eval()
