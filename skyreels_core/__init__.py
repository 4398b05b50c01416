"""SkyReels-V4 in plain PyTorch: the dual-stream MMDiT, its conditioning, sampler, codecs and refiner.

This package never imports ComfyUI; the node pack in ``nodes/`` wraps it. Submodules are imported
lazily by their users so that ``import skyreels_core`` stays cheap inside the host's start-up.
"""

__version__ = "0.1.0"
