"""The synthetic audio-visual world of the bundled demo model (DESIGN §5).

Flat shapes on a plain background, bouncing under gravity or gliding left/right; each shape hums a
tone whose pitch names its colour, and every contact with the floor or a wall clicks at exactly
that frame. Everything is a deterministic function of a seed, with the ground truth kept beside
the pixels and samples so the eval can score generated clips against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from ..shapes import sound_samples

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.80, 0.20),
    "blue": (0.20, 0.35, 0.95),
    "yellow": (0.95, 0.85, 0.15),
}
PITCH_FOR_COLOUR: dict[str, float] = {"red": 220.0, "green": 330.0, "blue": 440.0, "yellow": 660.0}
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("bounces on the floor", "moves left", "moves right")
BACKGROUND = (0.12, 0.12, 0.14)
SAMPLE_RATE = 16000
FPS = 16.0
GRAVITY = 0.35  # px per frame^2 at 64 px; scales with the frame size
CLICK_SECONDS = 0.012
HUM_AMPLITUDE = 0.15
CLICK_AMPLITUDE = 0.6


@dataclass(frozen=True)
class ObjectSpec:
    colour: str
    shape: str
    motion: str
    x: float  # start centre, in units of the frame size
    y: float
    vx: float  # px per frame at 64 px
    vy: float
    radius: float  # in units of the frame size


@dataclass(frozen=True)
class SceneSpec:
    objects: tuple[ObjectSpec, ...]


@dataclass
class TrackedObject:
    spec: ObjectSpec
    positions: torch.Tensor  # [T, 2] centre (x, y) in pixels
    contact_frames: list[int] = field(default_factory=list)


@dataclass
class Scene:
    frames: torch.Tensor  # [T, H, W, 3] in 0..1
    audio: torch.Tensor  # [1, S] mono
    sample_rate: int
    fps: float
    caption: str
    objects: list[TrackedObject]

    @property
    def contact_frames(self) -> list[int]:
        return sorted({f for tracked in self.objects for f in tracked.contact_frames})


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _choice(generator: torch.Generator, options):
    return options[int(torch.randint(len(options), (), generator=generator))]


def object_spec(colour: str, shape: str, motion: str, generator: torch.Generator) -> ObjectSpec:
    radius = _uniform(generator, 0.09, 0.13)
    if motion == "bounces on the floor":
        return ObjectSpec(colour, shape, motion, _uniform(generator, 0.3, 0.7), _uniform(generator, 0.2, 0.45),
                          _uniform(generator, -0.6, 0.6), _uniform(generator, -0.5, 0.5), radius)  # fmt: skip
    direction = -1.0 if motion == "moves left" else 1.0
    start = 0.7 if direction < 0 else 0.3
    return ObjectSpec(colour, shape, motion, start + _uniform(generator, -0.1, 0.1), _uniform(generator, 0.35, 0.75),
                      direction * _uniform(generator, 1.2, 2.2), 0.0, radius)  # fmt: skip


def sample_scene_spec(seed: int, max_objects: int = 1) -> SceneSpec:
    """A random scene; two objects (different colours) when ``max_objects`` allows and the seed says so."""
    generator = torch.Generator().manual_seed(int(seed))
    count = (
        1 if max_objects == 1 else int(torch.randint(1, max_objects + 1, (), generator=generator))
    )
    colours = torch.randperm(len(COLOURS), generator=generator)[:count].tolist()
    objects = tuple(
        object_spec(
            list(COLOURS)[c], _choice(generator, SHAPES), _choice(generator, MOTIONS), generator
        )
        for c in colours
    )
    return SceneSpec(objects)


def spec_from_caption(caption: str, seed: int = 0) -> SceneSpec:
    """The scene a caption describes (colour, shape, motion), with the free parameters from ``seed``."""
    colour, shape, motion = parse_caption(caption)
    return SceneSpec(
        (object_spec(colour, shape, motion, torch.Generator().manual_seed(int(seed))),)
    )


def caption_for(spec: SceneSpec) -> str:
    return " and ".join(f"a {o.colour} {o.shape} {o.motion}" for o in spec.objects)


def parse_caption(text: str) -> tuple[str, str, str]:
    """(colour, shape, motion) of the first object a caption names; ValueError when it names none."""
    words = text.lower()
    colour = next((c for c in COLOURS if c in words), None)
    shape = next((s for s in SHAPES if s in words), None)
    motion = next(
        (m for m in MOTIONS if m.split()[0] in words and m.split()[-1] in words), MOTIONS[0]
    )
    if colour is None or shape is None:
        raise ValueError(
            f"{text!r} names no demo colour ({', '.join(COLOURS)}) and shape ({', '.join(SHAPES)})"
        )
    return colour, shape, motion


def simulate(spec: ObjectSpec, frames: int, size: int) -> TrackedObject:
    """Frame-by-frame motion; a contact clamps the shape to the floor/wall *on* that frame, so the
    frame that shows the touch is the frame that clicks."""
    scale = size / 64
    radius = spec.radius * size
    x, y = spec.x * size, spec.y * size
    vx, vy = spec.vx * scale, spec.vy * scale
    gravity = GRAVITY * scale if spec.motion == "bounces on the floor" else 0.0
    positions, contacts = [], []
    for frame in range(frames):
        if frame:
            vy += gravity
            x, y = x + vx, y + vy
            touched = False
            if y > size - radius:
                y, vy, touched = size - radius, -abs(vy), True
            if x < radius or x > size - radius:
                x = min(max(x, radius), size - radius)
                vx, touched = -vx, True
            if touched:
                contacts.append(frame)
        positions.append((x, y))
    return TrackedObject(spec, torch.tensor(positions, dtype=torch.float32), contacts)


def shape_mask(shape: str, cx: float, cy: float, radius: float, size: int) -> torch.Tensor:
    """[size, size] coverage in 0..1 (4x supersampled edges)."""
    fine = 4
    coords = (torch.arange(size * fine, dtype=torch.float32) + 0.5) / fine
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        inside = dx**2 + dy**2 <= radius**2
    elif shape == "square":
        half = radius * 0.85
        inside = (dx.abs() <= half) & (dy.abs() <= half)
    else:  # triangle, apex up
        inside = (dy <= radius) & (dx.abs() <= (dy + radius) / 2)
    return inside.float().reshape(size, fine, size, fine).mean(dim=(1, 3))


def render_frames(objects: list[TrackedObject], frames: int, size: int) -> torch.Tensor:
    video = torch.tensor(BACKGROUND).expand(frames, size, size, 3).clone()
    for tracked in objects:
        colour = torch.tensor(COLOURS[tracked.spec.colour])
        radius = tracked.spec.radius * size
        for frame in range(frames):
            cx, cy = tracked.positions[frame].tolist()
            alpha = shape_mask(tracked.spec.shape, cx, cy, radius, size)[..., None]
            video[frame] = video[frame] * (1 - alpha) + colour * alpha
    return video


def click(sample_rate: int) -> torch.Tensor:
    """A short decaying 3 kHz burst: sharp onset, easy to time."""
    t = torch.arange(int(CLICK_SECONDS * sample_rate), dtype=torch.float64) / sample_rate
    return (CLICK_AMPLITUDE * torch.sin(2 * math.pi * 3000 * t) * torch.exp(-t / 0.003)).float()


def render_audio(
    objects: list[TrackedObject], frames: int, fps: float, sample_rate: int
) -> torch.Tensor:
    samples = sound_samples(frames, fps, sample_rate)
    t = torch.arange(samples, dtype=torch.float64) / sample_rate
    audio = torch.zeros(samples, dtype=torch.float64)
    burst = click(sample_rate).double()
    for tracked in objects:
        audio += HUM_AMPLITUDE * torch.sin(2 * math.pi * PITCH_FOR_COLOUR[tracked.spec.colour] * t)
        for frame in tracked.contact_frames:
            start = sound_samples(frame, fps, sample_rate)  # the frame starts there
            end = min(samples, start + len(burst))
            audio[start:end] += burst[: end - start]
    return audio.clamp(-1, 1).float()[None]


def render_scene(
    spec: SceneSpec,
    frames: int = 33,
    size: int = 64,
    fps: float = FPS,
    sample_rate: int = SAMPLE_RATE,
    palette: dict[str, str] | None = None,
) -> Scene:
    """``palette`` renders each caption colour as another (its look and its hum): the world a
    style LoRA learns, while the caption keeps the colour the prompt names."""
    palette = palette or {}
    objects = [
        simulate(replace(o, colour=palette.get(o.colour, o.colour)), frames, size)
        for o in spec.objects
    ]
    return Scene(
        frames=render_frames(objects, frames, size),
        audio=render_audio(objects, frames, fps, sample_rate),
        sample_rate=sample_rate,
        fps=fps,
        caption=caption_for(spec),
        objects=objects,
    )
