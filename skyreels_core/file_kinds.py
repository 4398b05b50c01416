"""What a file holds, told by its name, and a folder's files of some kinds: one table and one
walk for the nodes' file lists, the queue command's --inputs and train-demo-lora's --clips, so
the three agree on a folder. Imports no torch: the queue command runs without it."""

from __future__ import annotations

from pathlib import Path

AV_LATENT_SUFFIX = ".av_latent.safetensors"  # Save AV Latent's takes, kept whole when renamed
# The host's Load Image and Load Video list images and videos; this pack's Load Audio lists
# sounds and videos (each read through PyAV in tests/test_media_nodes.py). Text is a kind so
# that a caption named beside its clip is refused by name rather than queued as a clip.
SUFFIXES = {
    "image": (".png", ".jpg", ".jpeg", ".jfif", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".tga",
              ".avif", ".heic"),
    "video": (".mp4", ".mov", ".mkv", ".webm", ".avi"),
    "sound": (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aiff", ".aif", ".wma"),
    "text": (".txt", ".json", ".csv", ".md", ".srt", ".vtt"),
    "take": (AV_LATENT_SUFFIX,),
}  # fmt: skip


def kind_of(path: Path) -> str | None:
    """What ``path``'s name says it holds (see SUFFIXES); None for a suffix not listed."""
    name = path.name.lower()
    return next((kind for kind, ends in SUFFIXES.items() if name.endswith(ends)), None)


def files_of(folder: Path, kinds: tuple[str, ...] | None = None) -> list[Path]:
    """The files at the top of ``folder``, sorted, of ``kinds`` (None: any). Hidden files are
    none of them: macOS leaves ``._clip.mp4`` (AppleDouble) beside a copied clip, which no
    reader opens."""
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file()
        and not path.name.startswith(".")
        and (kinds is None or kind_of(path) in kinds)
    )
