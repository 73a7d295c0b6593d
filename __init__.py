"""CLIP Suite: CLIP-skip text encoding, long prompts and CLIP scoring for ComfyUI.

ComfyUI imports this folder as a package and reads the mappings below. Nothing heavy runs at import:
the node classes are plain classes, and models load only when a node runs.
"""

if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    # Imported as a plain file rather than a package: pytest (8+) imports the repository root's
    # __init__.py this way when the clone's folder name is not a Python identifier. There is nothing
    # to register then; the tests import the installed package ``clip_suite``.
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
