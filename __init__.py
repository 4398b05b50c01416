"""SkyReels-V4 node pack for ComfyUI.

ComfyUI imports this file as a package named after its folder (any name, hyphens included). The
bundled ``skyreels_core`` library is loaded by file location rather than by putting this folder on
``sys.path``, so the pack's ``nodes``/``tests`` folders never shadow the host's modules.
"""

import importlib.util
import os
import sys


def _load_bundled_core() -> None:
    if "skyreels_core" in sys.modules:
        return
    core_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "skyreels_core")
    spec = importlib.util.spec_from_file_location(
        "skyreels_core",
        os.path.join(core_dir, "__init__.py"),
        submodule_search_locations=[core_dir],
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["skyreels_core"] = module
    spec.loader.exec_module(module)


_load_bundled_core()

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

WEB_DIRECTORY = "./js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
