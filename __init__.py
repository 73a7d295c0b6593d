"""CLIP Suite: CLIP-skip text encoding, long prompts and CLIP scoring for ComfyUI.

ComfyUI imports this folder as a package and reads the mappings below. Nothing heavy runs at import:
the node classes are plain classes, and models load only when a node runs.
"""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
