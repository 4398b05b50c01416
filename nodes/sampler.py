"""The dual-stream sampler node: one call denoises video and audio together."""

from __future__ import annotations

from skyreels_core.codecs import latent_audio_tokens
from skyreels_core.demo.bundle import render_advice
from skyreels_core.families import require_width
from skyreels_core.masks import keyframe_latent_frames
from skyreels_core.memory import out_of_memory_advice
from skyreels_core.sampling import (
    MAX_SEED,
    MAX_STEPS,
    SOLVERS,
    SamplerSettings,
    flow_sigmas,
    require_fps,
    require_one_family,
    sample,
    sigmas_from_text,
)
from skyreels_core.shapes import frame_rate, parse_frame_indices, pixel_frame_count

from . import host, link_types
from .codec_inputs import video_codec
from .notes import with_note
from .previews import render_hooks

CATEGORY = "SkyReels-V4/sampling"


class SkyReelsV4Sampler:
    DESCRIPTION = (
        "Denoises the video and the audio of one clip together with flow matching. Known frames and "
        "regions of the condition come out unchanged; audio is always generated and synchronised."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (link_types.AV_LATENT,)
    RETURN_NAMES = ("av_latent",)
    OUTPUT_TOOLTIPS = (
        "The rendered video and audio latents (and high-res keyframes when asked), for the "
        "decoders, Refine or Save AV Latent.",
    )
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (link_types.MODEL, {"tooltip": "The dual-stream model."}),
                "text": (link_types.TEXT, {"tooltip": "The encoded prompt."}),
                "condition": (
                    link_types.CONDITION,
                    {"tooltip": "What is known: from a SkyReels-V4 Mask node."},
                ),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": MAX_SEED,
                        "tooltip": "Same seed, same clip on any device.",
                    },
                ),
                "steps": (
                    "INT",
                    {
                        "default": 50,
                        "min": 1,
                        "max": MAX_STEPS,
                        "tooltip": "Denoising steps; more is slower and finer.",
                    },
                ),
                "shift": (
                    "FLOAT",
                    {
                        "default": 5.0,
                        "min": 0.1,
                        "max": 20.0,
                        "step": 0.1,
                        "tooltip": "Timestep shift; higher spends more steps on coarse structure.",
                    },
                ),
                "solver": (
                    list(SOLVERS),
                    {
                        "default": next(iter(SOLVERS)),
                        "tooltip": "unipc and dpmpp_2m are second order; euler is first order.",
                    },
                ),
                "video_guidance": (
                    "FLOAT",
                    {
                        "default": 4.0,
                        "min": 1.0,
                        "max": 20.0,
                        "step": 0.1,
                        "tooltip": "Prompt strength for the video; 1 skips the negative pass when audio is 1 too.",
                    },
                ),
                "audio_guidance": (
                    "FLOAT",
                    {
                        "default": 3.0,
                        "min": 1.0,
                        "max": 20.0,
                        "step": 0.1,
                        "tooltip": "Prompt strength for the audio.",
                    },
                ),
                "fps": link_types.fps_input("Frame rate of the clip; sets the audio length."),
            },
            "optional": {
                "negative": (
                    link_types.TEXT,
                    {
                        "tooltip": "What to avoid (an encoded negative prompt). Unconnected or "
                        "empty: the null prompt the model was trained to drop prompts to."
                    },
                ),
                "references": (
                    link_types.REFERENCES,
                    {"tooltip": "In-context image, clip and audio references."},
                ),
                "audio_vae": (
                    link_types.AUDIO_VAE,
                    {"tooltip": "Sets the audio token rate; defaults to the model's own codec."},
                ),
                "video_vae": (
                    link_types.ANY_VIDEO_VAE,
                    {
                        "tooltip": "Connect to see live previews while sampling (where ComfyUI shows "
                        "previews: --preview-method auto, as for its own samplers)."
                    },
                ),
                "keyframe_indices": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Low-res + high-res keyframes mode: frames to render at high resolution too (empty = off); not frames the condition keeps.",
                    },
                ),
                "keyframe_scale": (
                    "INT",
                    {
                        "default": 2,
                        "min": 2,
                        "max": 4,
                        "tooltip": "Resolution factor of the high-res keyframes.",
                    },
                ),
                "free_memory_each_step": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "After every step, hand the memory its activations used back "
                        "to the GPU driver, so previews, other nodes and programs can use it "
                        "while sampling. Costs re-allocating the next step's activations (a few "
                        "percent of step time).",
                    },
                ),
                "initial": (
                    link_types.AV_LATENT,
                    {
                        "tooltip": "Video and sound to start from when denoise_start is below 1 "
                        "(video-to-video, variations): a Sampler's output, or Encode Video + "
                        "Encode Audio of a clip."
                    },
                ),
                "denoise_start": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.05,
                        "max": 1.0,
                        "step": 0.05,
                        "tooltip": "Denoise strength: 1 draws from pure noise; lower starts from "
                        "`initial` noised to this level and keeps more of it (its layout and "
                        "motion below about 0.7).",
                    },
                ),
                "cache_threshold": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 2.0,
                        "step": 0.01,
                        "tooltip": "Step cache (EasyCache): skip the model at steps whose output "
                        "it predicts from the last steps' trend, while the predicted change "
                        "since the last real call stays below this. 0 = off. On the demo model "
                        "0.2 ran 24 of 50 calls (13 of 20) with colour, shape, pitch and sync "
                        "unchanged; higher skips more and drifts further. The first 15 % of the "
                        "steps and the last step always run.",
                    },
                ),
                "sigmas": (
                    link_types.SIGMAS,
                    {
                        "tooltip": "A noise schedule given outright (SkyReels-V4 Schedule, or the "
                        "host's sigma nodes): times from 1 (pure noise) down to 0. Replaces "
                        "steps, shift and denoise_start; a schedule starting below 1 refines "
                        "`initial`."
                    },
                ),
                "audio_lag": (
                    "FLOAT",
                    {
                        "default": 0.0,
                        "min": 0.0,
                        "max": 4.0,
                        "step": 0.1,
                        "tooltip": "How far the sound's denoising runs behind the picture's: 0 = "
                        "the model's own (2 for a model trained for it, 1 otherwise), 1 = both "
                        "together. Behind the picture the sound places its hits against motion "
                        "that is already plain; only models trained with a time of their own "
                        "for the sound take more than 1.",
                    },
                ),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def sample(
        self,
        model,
        text,
        condition,
        seed: int,
        steps: int,
        shift: float,
        solver: str,
        video_guidance: float,
        audio_guidance: float,
        fps: float,
        negative=None,
        references=None,
        audio_vae=None,
        video_vae=None,
        keyframe_indices: str = "",
        keyframe_scale: int = 2,
        free_memory_each_step: bool = False,
        initial=None,
        denoise_start: float = 1.0,
        cache_threshold: float = 0.0,
        sigmas=None,
        audio_lag: float = 0.0,
        unique_id=None,
        progress: host.Progress | host.ProgressPart | None = None,
    ):
        """``progress``: a bar this render fills part of (Extend to Length's, over its windows);
        the node's own by default."""
        _require_one_family(
            model.module.config,
            text,
            negative,
            condition,
            references,
            initial,
            video_vae,
            audio_vae,
        )
        frames = pixel_frame_count(condition.num_latent_frames)
        frame_rate(fps)  # a linked rate skips the widget's limits
        require_fps(fps, condition.fps, "a clip")
        audio_tokens = None
        if model.has_audio:
            rate = audio_vae or model.audio_codec_rate
            audio_tokens = latent_audio_tokens(condition.num_latent_frames, fps, rate)
        keyframes = []
        if keyframe_indices.strip():
            keyframes = keyframe_latent_frames(parse_frame_indices(keyframe_indices, frames))
        settings = SamplerSettings(
            steps=steps,
            shift=shift,
            solver=solver,
            video_guidance=video_guidance,
            audio_guidance=audio_guidance,
            seed=seed,
            denoise_start=denoise_start,
            cache_threshold=cache_threshold,
            sigmas=sigmas,
            audio_lag=audio_lag or None,
        )
        if initial is not None and settings.denoise_start < 1.0:
            require_fps(fps, initial.fps, "the initial latent")
        own_bar = progress is None
        if own_bar:
            progress = host.Progress(
                settings.steps, node_id=unique_id, description="SkyReels-V4 sampling"
            )
        codec = None if video_vae is None else video_codec(video_vae)
        hooks = render_hooks(progress, codec, free_memory_each_step=free_memory_each_step)
        device = host.torch_device()
        host.make_room(model.module, device, model.block_swap, model.lora_bytes())
        try:
            with out_of_memory_advice("SkyReels-V4 sampling"), model.on(device):
                result = sample(
                    model.module,
                    text=text,
                    negative_text=negative,
                    condition=condition,
                    audio_tokens=audio_tokens,
                    fps=fps,
                    settings=settings,
                    references=references,
                    keyframe_indices=keyframes,
                    keyframe_scale=keyframe_scale,
                    hooks=hooks,
                    initial=initial,
                )
        finally:
            if own_bar:
                progress.close()
            host.soft_empty_cache()
        result = result.to(host.intermediate_device())  # the host caches outputs: not in VRAM
        advice = render_advice(model.module.config.name, condition, keyframes=bool(keyframes))
        return with_note(result, advice, "Sampler")


def _require_one_family(
    config, text, negative, condition, references, initial, video_vae, audio_vae
) -> None:
    """Every input the model reads (the library's check), and the VAEs that will preview and
    decode its render, of the model's own family: before the first step and before the host
    frees memory for it, not at the decode after it."""
    require_one_family(config, text, negative, condition, references, initial)
    video, audio = config.video_latent_channels, config.audio_latent_channels
    checks = [
        ("video_vae", video_vae and video_codec(video_vae).latent_channels, video, "video latent channels"),
        ("audio_vae", audio_vae and audio_vae.latent_channels, audio, "audio latent channels"),
    ]  # fmt: skip
    for input_name, found, expected, what in checks:
        require_width(input_name, found, expected, what, "this model")


class SkyReelsV4Schedule:
    DESCRIPTION = (
        "The Sampler's noise schedule as the host's SIGMAS, to reshape with the host's sigma nodes "
        "(Split Sigmas, Set First Sigma, ...) or to replace with times written out: a distilled "
        "model's or LoRA's published few-step schedule."
    )
    CATEGORY = CATEGORY
    RETURN_TYPES = (link_types.SIGMAS,)
    RETURN_NAMES = ("sigmas",)
    OUTPUT_TOOLTIPS = ("Times from the start down to 0, for the Sampler's `sigmas` input.",)
    FUNCTION = "schedule"

    @classmethod
    def INPUT_TYPES(cls):
        sampler = SkyReelsV4Sampler.INPUT_TYPES()
        return {
            "required": {
                "steps": sampler["required"]["steps"],
                "shift": sampler["required"]["shift"],
                "denoise_start": sampler["optional"]["denoise_start"],
            },
            "optional": {
                "custom": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Times written out, from 1 down to 0, e.g. "
                        "`1.0, 0.9375, 0.8333, 0.625, 0` (a distillation LoRA's schedule): "
                        "replaces steps, shift and denoise_start. Empty: the Sampler's own "
                        "shifted schedule.",
                    },
                ),
            },
        }

    def schedule(self, steps: int, shift: float, denoise_start: float, custom: str = ""):
        """Float64, as the Sampler computes its own: wired straight in, it renders bit for bit
        what the Sampler's widgets do."""
        if custom.strip():
            return (sigmas_from_text(custom),)
        return (flow_sigmas(steps, shift, denoise_start),)


NODE_CLASS_MAPPINGS = {
    "SkyReelsV4Sampler": SkyReelsV4Sampler,
    "SkyReelsV4Schedule": SkyReelsV4Schedule,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SkyReelsV4Sampler": "SkyReels-V4 Sampler (video + audio)",
    "SkyReelsV4Schedule": "SkyReels-V4 Schedule (sigmas)",
}
