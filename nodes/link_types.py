"""The pack's custom ComfyUI link types (plain strings the host matches by name)."""

MODEL = "SKYREELS_MODEL"
TEXT_ENCODER = "SKYREELS_TEXT_ENCODER"
TEXT = "SKYREELS_TEXT"
VIDEO_VAE = "SKYREELS_VIDEO_VAE"
AUDIO_VAE = "SKYREELS_AUDIO_VAE"
CONDITION = "SKYREELS_COND"
REFERENCES = "SKYREELS_REFS"
AV_LATENT = "SKYREELS_AV_LATENT"
REFINER = "SKYREELS_REFINER"
# The host's own noise schedule type: a 1-D tensor of times, so its sigma nodes connect.
SIGMAS = "SIGMAS"

# Video-VAE inputs also take the host's own VAE object when it holds the same Wan 2.1 model.
ANY_VIDEO_VAE = f"{VIDEO_VAE},VAE"

VIDEO_VAE_INPUT = (
    ANY_VIDEO_VAE,
    {
        "tooltip": "The video VAE the model was trained with (the pack's loader, or the host's Wan 2.1 VAE)."
    },
)
AUDIO_VAE_INPUT = (AUDIO_VAE, {"tooltip": "The audio VAE + vocoder the model was trained with."})


def fps_input(tooltip: str) -> tuple[str, dict]:
    """Every frame-rate widget of the pack, one spec: the frontend rounds a FLOAT to its step's
    decimals (no step: 0.5, rounding 29.97 to 30 on one node while the Sampler kept it, which
    then refused the clip's latent as made at another rate); a step of 1 keeps what is typed,
    as the host's own Create Video does, and moves whole frames per second."""
    return ("FLOAT", {"default": 16.0, "min": 1.0, "max": 120.0, "step": 1.0, "tooltip": tooltip})
