"""Refiner nodes (DESIGN §4): load the refiner, and refine the sampler's low-res clip to high
resolution and (optionally) a higher frame rate, re-injecting its high-res keyframes."""

from __future__ import annotations

import torch

from skyreels_core.demo import bundle
from skyreels_core.errors import InputError
from skyreels_core.families import channels, require_width
from skyreels_core.masks import keyframe_latent_frames
from skyreels_core.memory import out_of_memory_advice
from skyreels_core.refiner import (
    RefinerSettings,
    check_take_keyframes,
    load_refiner,
    refine_take,
)
from skyreels_core.runtime import resolve_dtype
from skyreels_core.sampling import MAX_SEED
from skyreels_core.shapes import latent_to_pixel_frames, pixel_frame_count, typed_frame_indices
from skyreels_core.types import AVLatent

from . import host, link_types
from .codec_inputs import video_codec
from .loaders import CATEGORY as LOADERS_CATEGORY
from .loaders import DTYPE_INPUT, FileLoader
from .notes import with_note
from .previews import render_hooks
from .validation import reports_input_errors

CATEGORY = "SkyReels-V4/refiner"


class SkyReelsV4RefinerLoader(FileLoader):
    DESCRIPTION = "Loads the refiner DiT from models/skyreels_refiner, or the bundled demo refiner."
    CATEGORY = LOADERS_CATEGORY
    RETURN_TYPES = (link_types.REFINER,)
    RETURN_NAMES = ("refiner",)
    OUTPUT_TOOLTIPS = ("The refiner, for the Refine node.",)
    FILE_INPUTS = {"refiner_name": "refiner"}

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "refiner_name": (
                    [bundle.BUNDLED, *host.list_models("refiner")],
                    {"tooltip": "A SkyReels-V4 refiner .safetensors (its config is in the file)."},
                ),
                "dtype": DTYPE_INPUT,
            }
        }

    def load(self, refiner_name: str, dtype: str):
        path = (
            bundle.refiner_path()
            if refiner_name == bundle.BUNDLED
            else host.model_path("refiner", refiner_name)
        )
        torch_dtype = resolve_dtype(dtype, host.torch_device())
        device = host.offload_device()
        refiner = load_refiner(
            path, dtype=torch_dtype, device=device, input_name="refiner_name", reserve=host.reserve
        )
        return (refiner,)


def _keyframes(
    av_latent: AVLatent, keyframes: AVLatent | None, keyframe_indices: str, scale: int
) -> tuple[torch.Tensor | None, list[int]]:
    """The high-res keyframe latents and their low-res latent frames: the optional ``keyframes``
    input (its keyframes, or its video frames as keyframes) or else the clip's own keyframes;
    typed pixel frames override the indices they carry, paired with the keyframes in the order
    typed (the core re-injects keyframe k at index k, in any order), one per latent group as in
    Mask: Keyframes. What does not fit is named in the node's own terms (widgets, pixel frames)."""
    source = keyframes if keyframes is not None else av_latent
    latents = source.keyframes
    indices = list(source.keyframe_indices)
    if latents is None and keyframes is not None:
        latents, indices = keyframes.video, []
    frames = pixel_frame_count(av_latent.video.shape[2])
    if keyframe_indices.strip():
        indices = keyframe_latent_frames(typed_frame_indices(keyframe_indices, frames))
        if latents is None:
            raise InputError(
                "keyframes",
                "frames were typed but no high-res keyframes are connected",
                "connect keyframes, use the sampler's keyframe mode, or clear keyframe_indices",
            )
        if len(indices) != latents.shape[2]:
            raise InputError(
                "keyframe_indices",
                f"{len(indices)} frames typed for {latents.shape[2]} keyframes",
                "type one frame per keyframe, in their order",
            )
    elif latents is not None and not indices:
        raise InputError(
            "keyframe_indices",
            "the connected keyframes do not say which frames they are",
            'type their frames in the low-res clip, e.g. "0, 16"',
        )
    past = [latent_to_pixel_frames(i)[0] for i in indices if i >= av_latent.video.shape[2]]
    if past:  # carried by another take's keyframes (typed frames are checked when read)
        raise InputError(
            "keyframes",
            f"their frames {past} lie past the clip's {frames} frames",
            "type the frames of this clip they belong to in keyframe_indices",
        )
    if keyframes is None and latents is not None:  # the take's own: no keyframes input to name
        check_take_keyframes(av_latent, scale)
    return latents, indices


class SkyReelsV4Refine:
    DESCRIPTION = (
        "Refines the sampler's low-res clip: upsamples it in latent space, re-injects the high-res "
        "keyframes (unchanged), inserts frames for 2x / 4x fps, and denoises a few steps with "
        "block-sparse attention (dense on clips too small for it to pay, such as the demo "
        "refiner's). Audio is carried along unchanged."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (link_types.AV_LATENT,)
    RETURN_NAMES = ("av_latent",)
    OUTPUT_TOOLTIPS = (
        "The refined clip's latents at the new size and frame rate, its sound passed through, "
        "for Decode Video, Decode Audio or Save AV Latent.",
    )
    FUNCTION = "refine"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "refiner": (link_types.REFINER, {"tooltip": "From SkyReels-V4 Load Refiner."}),
                "av_latent": (
                    link_types.AV_LATENT,
                    {
                        "tooltip": "The low-res clip from the sampler; its high-res keyframes (keyframe mode) are re-injected."
                    },
                ),
                "scale": (
                    "INT",
                    {
                        "default": 2,
                        "min": 1,
                        "max": 4,
                        "tooltip": "Super-resolution factor (the demo refiner is trained for 2).",
                    },
                ),
                "fps_factor": (
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": 4,
                        "tooltip": "Frame interpolation: 1, 2 or 4 times the frame rate; F frames become "
                        "factor x (F - 1) + 1, same duration.",
                    },
                ),
                "reinject_keyframes": (
                    "BOOLEAN",
                    {
                        "default": True,
                        "tooltip": "Keep the high-res keyframes exactly; off refines from the low-res clip alone.",
                    },
                ),
                "sparsity": (
                    "FLOAT",
                    {
                        "default": 0.75,
                        "min": 0.0,
                        "max": 0.95,
                        "step": 0.05,
                        "tooltip": "Share of attention blocks skipped (0 = dense). 0.75 costs about 38 % "
                        "of dense attention's FLOPs at 720p, 5 s; a clip too small for it to cost at "
                        "most half (the demo refiner's) refines dense.",
                    },
                ),
                "steps": (
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": 50,
                        "tooltip": "Denoising steps from denoise_start. One step from 1.0 returns "
                        "the refiner's mean estimate of the clip (closest to the truth in PSNR); "
                        "more steps draw a sample, with more invented detail.",
                    },
                ),
                "denoise_start": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.05,
                        "max": 1.0,
                        "step": 0.05,
                        "tooltip": "Denoise strength: lower keeps more of the upsampled clip, 1 redraws it all.",
                    },
                ),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": MAX_SEED,
                        "tooltip": "Same seed, same refinement on any device.",
                    },
                ),
            },
            "optional": {
                "keyframes": (
                    link_types.AV_LATENT,
                    {
                        "tooltip": "Other high-res keyframes (their keyframes, or their video frames); "
                        "default: the clip's own."
                    },
                ),
                "keyframe_indices": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Frames of the low-res clip the keyframes belong to (empty = the ones they carry).",
                    },
                ),
                "video_vae": (
                    link_types.ANY_VIDEO_VAE,
                    {
                        "tooltip": "Connect to see live previews while refining (where ComfyUI shows "
                        "previews: --preview-method auto, as for its own samplers)."
                    },
                ),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    @classmethod
    @reports_input_errors
    def VALIDATE_INPUTS(cls, fps_factor: int | None = None):
        # The one widget its min / max cannot check (3 lies in 1..4); the host checks the rest
        # and shows a refusal here on every input this signature names.
        if fps_factor is not None:
            RefinerSettings(fps_factor=fps_factor).validate()
        return True

    def refine(
        self,
        refiner,
        av_latent: AVLatent,
        scale: int,
        fps_factor: int,
        reinject_keyframes: bool,
        sparsity: float,
        steps: int,
        denoise_start: float,
        seed: int,
        keyframes: AVLatent | None = None,
        keyframe_indices: str = "",
        video_vae=None,
        unique_id=None,
    ):
        settings = RefinerSettings(
            scale=scale,
            fps_factor=fps_factor,
            reinject_keyframes=reinject_keyframes,
            sparsity=sparsity,
            steps=steps,
            denoise_start=denoise_start,
            seed=seed,
        ).validate()
        taken = refiner.config.video_latent_channels
        for name, latent in (("av_latent", av_latent), ("keyframes", keyframes)):
            if latent is not None:
                found = channels(latent.video)
                require_width(name, found, taken, "video latent channels", "this refiner")
        codec = video_codec(video_vae) if video_vae is not None else None
        if codec is not None:
            found = codec.latent_channels
            require_width("video_vae", found, taken, "video latent channels", "this refiner")
        key_latents, indices = (
            _keyframes(av_latent, keyframes, keyframe_indices, scale)
            if reinject_keyframes
            else (None, [])
        )
        progress = host.Progress(steps, node_id=unique_id, description="SkyReels-V4 refining")
        hooks = render_hooks(progress, codec)
        try:
            with out_of_memory_advice("SkyReels-V4 refining"):
                host.make_room(refiner, host.torch_device())
                refiner.to(host.torch_device())
                refined = refine_take(
                    refiner,
                    av_latent,
                    settings,
                    keyframes=key_latents,
                    keyframe_indices=indices,
                    hooks=hooks,
                )
        finally:
            refiner.to(host.offload_device())
            progress.close()
            host.soft_empty_cache()
        refined = refined.to(host.intermediate_device())  # the host caches outputs: not in VRAM
        notes = [bundle.refiner_scale_advice(refiner.config.name, scale)]
        if reinject_keyframes and keyframes is None and av_latent.keyframes is not None:
            notes.append(bundle.sampled_keyframes_advice(refiner.config.name))
        return with_note(refined, "; ".join(note for note in notes if note) or None, "Refine")


NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in (SkyReelsV4RefinerLoader, SkyReelsV4Refine)}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SkyReelsV4RefinerLoader": "SkyReels-V4 Load Refiner",
    "SkyReelsV4Refine": "SkyReels-V4 Refine",
}
