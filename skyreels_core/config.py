"""Model configurations: plain numbers, named presets, analytic parameter counts.

The same classes serve every preset, from the 2-block test model to the 14B-class full model;
presets differ only in these numbers (DESIGN §3).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

from .errors import InputError


def check_heads(name: str, dim: int, num_heads: int) -> None:
    """Rotary embeddings rotate pairs of channels, so every head needs an even width."""
    if dim % num_heads or (dim // num_heads) % 2:
        raise ValueError(f"{name}: dim {dim} must split into {num_heads} even heads")


@dataclass(frozen=True)
class ModelConfig:
    """The dual-stream MMDiT's shape.

    ``num_dual_blocks`` (M) blocks keep separate weights for the modality and the text tokens but
    attend jointly; ``num_single_blocks`` (N) follow with one set of weights over both. A
    Wan-compatible config has ``joint_text=False`` (text only through cross-attention), no audio
    stream and no inpainting channels, and then loads an original Wan 2.1 checkpoint 1:1.
    """

    name: str
    dim: int
    num_heads: int
    ffn_dim: int
    num_dual_blocks: int
    num_single_blocks: int
    text_dim: int
    video_latent_channels: int = 16
    channel_concat_inpainting: bool = True
    joint_text: bool = True
    audio_latent_channels: int | None = 40
    patch_size: tuple[int, int, int] = (1, 2, 2)
    freq_dim: int = 256
    eps: float = 1e-6
    rope_theta: float = 10000.0
    # Harmonics of the audio tokens' place inside their video latent group (rope.audio_group_angles)
    # added to the audio embedding; 0, the paper's model, leaves the audio to rotary time alone.
    audio_phase_harmonics: int = 0
    # Share of training clips whose sound is noised at a flow time of its own, drawn apart from
    # the picture's (training.training_loss); 0, the paper's model, gives both streams one time.
    # Only a model trained so can be sampled with the sound behind the picture: ``audio_lag`` > 1,
    # its sampling default (sampling.schedules.lagged_sigmas).
    audio_time_share: float = 0.0
    audio_lag: float = 1.0
    # Video frames each video token is split into where the audio attends the video
    # (AVCrossAttention.subframes); 0 or 1, the paper's model, attends whole latent tokens.
    av_video_subframes: int = 0

    def __post_init__(self) -> None:
        check_heads(self.name, self.dim, self.num_heads)
        if self.num_single_blocks and not self.joint_text:
            raise ValueError(f"{self.name}: single-stream blocks need joint_text")
        if not 0.0 <= self.audio_time_share <= 1.0:
            raise ValueError(f"{self.name}: audio_time_share {self.audio_time_share} not in [0, 1]")
        if self.audio_lag < 1.0 or (self.audio_lag > 1.0 and not self.audio_time_share):
            raise ValueError(
                f"{self.name}: audio_lag {self.audio_lag} needs 1, or above 1 with an "
                "audio_time_share above 0 (a model trained with a time of its own for the sound)"
            )

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def video_in_channels(self) -> int:
        """concat(V, I, M) when inpainting by channel concatenation (DESIGN §2), else V alone."""
        c = self.video_latent_channels
        return 2 * c + 1 if self.channel_concat_inpainting else c

    @property
    def has_audio(self) -> bool:
        return self.audio_latent_channels is not None

    @property
    def num_blocks(self) -> int:
        return self.num_dual_blocks + self.num_single_blocks

    def parameter_counts(self) -> dict[str, int]:
        """Weights per part, computed from the shapes (no model is built)."""
        d, f, t = self.dim, self.ffn_dim, self.text_dim
        linear = lambda i, o: i * o + o  # noqa: E731
        attention = 4 * linear(d, d) + 2 * d  # q, k, v, o and the two RMS-norm scales
        feed_forward = linear(d, f) + linear(f, d)
        embed = linear(self.freq_dim, d) + linear(d, d) + linear(d, 6 * d)
        text_embed = linear(t, d) + linear(d, d)
        dual = attention + feed_forward + 6 * d
        single = linear(d, 3 * d + f) + linear(d + f, d) + 2 * d + 3 * d
        text_joint = (attention + feed_forward + 6 * d) if self.joint_text else 0
        text_cross = attention + 2 * d  # plus its affine pre-norm
        av_cross = attention + 4 * d  # plus the affine pre-norms of both sides
        pt, ph, pw = self.patch_size
        counts = {
            "video": self.video_in_channels * pt * ph * pw * d + d + embed
            + self.num_dual_blocks * dual + self.num_single_blocks * single
            + linear(d, self.video_latent_channels * pt * ph * pw) + 2 * d,
            "text": text_embed + self.num_blocks * text_cross + self.num_dual_blocks * text_joint,
        }  # fmt: skip
        if self.has_audio:
            counts["audio"] = (
                linear(self.audio_latent_channels, d) + embed
                + (linear(2 * self.audio_phase_harmonics, d) if self.audio_phase_harmonics else 0)
                + self.num_dual_blocks * dual + self.num_single_blocks * single
                + linear(d, self.audio_latent_channels) + 2 * d
            )  # fmt: skip
            counts["text"] += text_embed + self.num_dual_blocks * text_joint
            split = linear(d, self.av_video_subframes * d) if self.av_video_subframes > 1 else 0
            counts["cross_modal"] = self.num_blocks * (2 * av_cross + split)
        counts["total"] = sum(counts.values())
        return counts


def _wan(name: str, dim: int, heads: int, ffn: int, layers: int) -> ModelConfig:
    return ModelConfig(
        name=name,
        dim=dim,
        num_heads=heads,
        ffn_dim=ffn,
        num_dual_blocks=layers,
        num_single_blocks=0,
        text_dim=4096,
        channel_concat_inpainting=False,
        joint_text=False,
        audio_latent_channels=None,
    )


PRESETS: dict[str, ModelConfig] = {
    # Tests: a forward pass in milliseconds on CPU.
    "tiny": ModelConfig(
        name="tiny", dim=32, num_heads=2, ffn_dim=64, num_dual_blocks=1, num_single_blocks=1,
        text_dim=16, video_latent_channels=4, audio_latent_channels=4,
    ),
    # The bundled demo model, trained by train-demo on 2 CPU cores on the 64 px demo world.
    "demo": ModelConfig(
        name="demo", dim=128, num_heads=4, ffn_dim=384, num_dual_blocks=2, num_single_blocks=2,
        text_dim=64, video_latent_channels=8, audio_latent_channels=8, audio_phase_harmonics=4,
        av_video_subframes=4, audio_time_share=0.5, audio_lag=2.0,
    ),
    "wan2.1-t2v-1.3b": _wan("wan2.1-t2v-1.3b", 1536, 12, 8960, 30),
    "wan2.1-t2v-14b": _wan("wan2.1-t2v-14b", 5120, 40, 13824, 40),
    # The full model. The paper does not disclose M and N. The video stream is initialised from
    # Wan 2.1 14B (DESIGN §3), whose 40 blocks carry the pretrained T2V prior: the first 30 become
    # dual-stream blocks one to one, keeping three quarters of that prior intact; the last 10 are
    # single-stream blocks (about 25 % cheaper per block: one fused projection, no separate text
    # weights), retrained with the audio stream anyway. Audio: same width, 40 MMAudio channels.
    "skyreels-v4-14b": ModelConfig(
        name="skyreels-v4-14b", dim=5120, num_heads=40, ffn_dim=13824, num_dual_blocks=30,
        num_single_blocks=10, text_dim=3584, video_latent_channels=16, audio_latent_channels=40,
    ),
}  # fmt: skip


def get_preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise InputError(
            "preset", f"{name!r} is not a known preset", f"use one of {', '.join(PRESETS)}"
        )
    return PRESETS[name]


def config_from_dict(values: dict) -> ModelConfig:
    """The inverse of ``dataclasses.asdict`` (checkpoint metadata)."""
    values = dict(values)
    values["patch_size"] = tuple(values["patch_size"])
    return ModelConfig(**values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="skyreels-v4-14b", help=f"one of {', '.join(PRESETS)}")


def run(args: argparse.Namespace) -> int:
    config = get_preset(args.preset)
    print(f"preset {config.name}")
    for key, value in asdict(config).items():
        if key != "name":
            print(f"  {key:26s} {value}")
    print("parameters")
    for part, count in config.parameter_counts().items():
        print(f"  {part:26s} {count:>16,d}  ({count / 1e9:.2f} B)")
    return 0
