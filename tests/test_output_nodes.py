"""Save Video keeps a clip in the output folder; Preview Video only plays it, from the temp folder."""

from __future__ import annotations

import sys
from datetime import datetime

import av
import pytest
import torch
from skyreels_pack import NODE_CLASS_MAPPINGS

from skyreels_core.errors import InputError

SAVE = NODE_CLASS_MAPPINGS["SkyReelsV4SaveVideo"]
PREVIEW = NODE_CLASS_MAPPINGS["SkyReelsV4PreviewVideo"]


@pytest.fixture
def folders(tmp_path, monkeypatch):
    output, temp = tmp_path / "output", tmp_path / "temp"
    monkeypatch.setenv("SKYREELS_OUTPUT_DIR", str(output))
    monkeypatch.setenv("SKYREELS_TEMP_DIR", str(temp))
    return output, temp


def _clip():
    frames = torch.rand(9, 32, 48, 3)
    sound = {"waveform": torch.randn(1, 1, 9 * 1000), "sample_rate": 16000}
    return frames, sound


def test_preview_video_plays_from_the_temp_folder_and_keeps_nothing(folders):
    output, temp = folders
    assert "filename_prefix" not in PREVIEW.INPUT_TYPES()["required"]
    frames, sound = _clip()
    shown = PREVIEW().save(frames, 16.0, audio=sound, prompt={"1": {}})["ui"]["skyreels_videos"]
    assert shown[0]["type"] == "temp" and shown[0]["subfolder"] == ""
    assert shown[0]["frame_count"] == 9 and shown[0]["frame_rate"] == 16.0
    path = temp / shown[0]["filename"]
    with av.open(str(path)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        assert container.streams.video[0].frames == 9
        assert container.metadata["prompt"] == '{"1": {}}'
    assert not output.exists()
    again = PREVIEW().save(frames, 16.0)["ui"]["skyreels_videos"][0]["filename"]
    assert again != shown[0]["filename"]  # a second preview never replaces the first


def test_saved_and_previewed_clips_carry_the_format_the_hosts_queue_previews_by(folders):
    """ComfyUI's /api/jobs, which its queue panel and media assets read, previews an output
    filed under a node's own key (``skyreels_videos``) only where the item names a ``video/`` or
    ``audio/`` format; without it a render showed in the queue with no clip."""
    frames, sound = _clip()
    for entry in (
        SAVE().save(frames, 16.0, "clip", audio=sound)["ui"]["skyreels_videos"][0],
        PREVIEW().save(frames, 16.0, audio=sound)["ui"]["skyreels_videos"][0],
    ):
        assert entry["format"] == "video/mp4" and entry["filename"].endswith(".mp4")


def test_the_hosts_disable_metadata_keeps_prompt_and_workflow_out_of_saved_files(
    folders, monkeypatch
):
    """A server run with --disable-metadata wrote every prompt and workflow into the MP4s and
    AV latents it handed out; the host's own save nodes leave them out, and so do these."""
    from safetensors import safe_open
    from skyreels_pack.nodes import host

    from skyreels_core.types import AVLatent

    output, _ = folders
    frames, sound = _clip()
    graph = {"prompt": {"1": {}}, "extra_pnginfo": {"workflow": {"nodes": []}}}
    take = AVLatent(video=torch.zeros(1, 4, 3, 4, 6), audio=None, fps=16.0)
    for disabled in (False, True):
        monkeypatch.setattr(host, "metadata_disabled", lambda disabled=disabled: disabled)
        saved = SAVE().save(frames, 16.0, "clip", audio=sound, **graph)["ui"]["skyreels_videos"]
        with av.open(str(output / saved[0]["filename"])) as container:
            keys = {"prompt", "workflow"} & set(container.metadata)
        latent = NODE_CLASS_MAPPINGS["SkyReelsV4SaveAVLatent"]().save(take, "take", **graph)
        (entry,) = latent["ui"]["skyreels_latents"]
        with safe_open(str(output / entry["subfolder"] / entry["filename"]), "pt") as handle:
            latent_keys = {"prompt", "workflow"} & set(handle.metadata())
        assert keys == latent_keys == (set() if disabled else {"prompt", "workflow"})


def test_save_video_keeps_the_clip_in_the_output_folder(folders):
    output, temp = folders
    frames, sound = _clip()
    saved = SAVE().save(frames, 16.0, "clips/take", audio=sound)["ui"]["skyreels_videos"][0]
    assert (saved["type"], saved["subfolder"]) == ("output", "clips")
    assert (output / "clips" / saved["filename"]).is_file() and not temp.exists()


def test_a_prefix_with_glob_characters_counts_past_its_own_files(folders):
    """ "take[1]" reads as a character class to a glob: unescaped, the first file was not seen
    and the second run was refused as "already exists"."""
    output, _ = folders
    frames, _ = _clip()
    names = [SAVE().save(frames, 16.0, "take[1]")["ui"]["skyreels_videos"][0] for _ in range(3)]
    assert [n["filename"] for n in names] == [f"take[1]_0000{i}.mp4" for i in (1, 2, 3)]
    assert sorted(p.name for p in output.iterdir()) == [n["filename"] for n in names]


class _Frozen(datetime):
    """2025-03-07 04:05:06, local time, whenever asked."""

    @classmethod
    def now(cls, tz=None):
        return cls(2025, 3, 7, 4, 5, 6)


def test_the_hosts_prefix_tokens_are_filled_in(folders, monkeypatch):
    """%date:FORMAT% as the frontend fills it for the core save nodes, and the tokens
    folder_paths.get_save_image_path fills (the frames' size, the local time)."""
    monkeypatch.setattr(sys.modules[SAVE.__module__], "datetime", _Frozen)
    output, _ = folders
    frames, _ = _clip()  # 48 wide, 32 high
    prefix = "%date:yyyy-MM-dd%/clip_%width%x%height%_%year%%month%%day%-%hour%%minute%%second%"
    saved = SAVE().save(frames, 16.0, prefix + "_%date:yy.M.d_h-m-s_hhmmss%")["ui"]
    (video,) = saved["skyreels_videos"]
    assert video["subfolder"] == "2025-03-07"
    assert video["filename"] == "clip_48x32_20250307-040506_25.3.7_4-5-6_040506_00001.mp4"
    assert (output / "2025-03-07" / video["filename"]).is_file()
    with pytest.raises(InputError, match="filename_prefix: '../%year%/x' leaves the output"):
        SAVE().save(frames, 16.0, "../%year%/x")
    with pytest.raises(InputError, match="filename_prefix: holds a NUL character"):
        SAVE().save(frames, 16.0, "clip\x00")


@pytest.mark.parametrize("name", ["SkyReelsV4SaveVideo", "SkyReelsV4SaveAVLatent"])
def test_a_prefix_outside_the_output_is_refused_when_queued(folders, name):
    """Refused at validation, before the render it would have thrown away; an empty prefix
    names no file (it was said to leave the output folder)."""
    node = NODE_CLASS_MAPPINGS[name]
    assert node.VALIDATE_INPUTS(filename_prefix="videos/take") is True
    verdict = node.VALIDATE_INPUTS(filename_prefix="../x")
    assert (
        verdict
        == "filename_prefix: '../x' leaves the output folder. Fix: use a name like 'videos/skyreels'"
    )
    assert node.VALIDATE_INPUTS(filename_prefix="").startswith("filename_prefix: '' names no file")


@pytest.mark.parametrize(
    ("prefix", "problem"),
    [
        ("take?", "holds '?', which Windows file names cannot"),
        ("runs/a|b", "holds '|', which Windows file names cannot"),
        ("%date:hh:mm%", "holds ':', which Windows file names cannot"),  # filled in: 12:34
        ("takes./x", "ends the name 'takes.' in a dot or space, which Windows drops"),
        ("videos/CON", "names 'CON', which Windows keeps for a device"),
        ("nul.take", "names 'nul.take', which Windows keeps for a device"),
    ],
)
def test_a_prefix_windows_cannot_hold_is_refused_when_queued_there(
    folders, monkeypatch, prefix, problem
):
    """On Windows such a prefix passed validation, then the save after the render failed naming
    its partial file (a ":" wrote into a hidden stream of the file before it). Elsewhere the
    same names are the host's to allow."""
    from skyreels_pack.nodes import output

    node = NODE_CLASS_MAPPINGS["SkyReelsV4SaveVideo"]
    assert node.VALIDATE_INPUTS(filename_prefix=prefix) is True
    monkeypatch.setattr(output, "ON_WINDOWS", True)
    assert node.VALIDATE_INPUTS(filename_prefix=prefix) == (
        f"filename_prefix: {prefix!r} {problem}. Fix: use letters, digits, - and _ there"
    )
    assert node.VALIDATE_INPUTS(filename_prefix="videos/take_%date:yyyy-MM-dd%") is True


@pytest.mark.parametrize("name", ["SkyReelsV4SaveVideo", "SkyReelsV4SaveAVLatent"])
def test_a_prefix_whose_folder_is_a_file_is_refused_when_queued(folders, name):
    """It passed validation, then the save after the render failed on FileExistsError."""
    output, _ = folders
    output.mkdir()
    (output / "videos").write_text("a file, not a folder")
    verdict = NODE_CLASS_MAPPINGS[name].VALIDATE_INPUTS(filename_prefix="videos/take/x")
    assert verdict == (
        "filename_prefix: 'videos/take/x' saves into videos, which is a file. "
        "Fix: name another sub-folder"
    )


@pytest.mark.parametrize(
    ("name", "suffix"),
    [("SkyReelsV4SaveVideo", ".mp4"), ("SkyReelsV4SaveAVLatent", ".av_latent.safetensors")],
)
def test_a_prefix_too_long_for_a_file_name_is_refused_when_queued_and_shortened_when_linked(
    folders, name, suffix
):
    """A prompt wired in as the prefix passed validation, then the save after the render failed
    on "File name too long" and the render was lost (and a folder name that long failed
    validation itself with an OSError). Typed, it is refused when queued; linked, known only at
    the save, it is shortened to the longest stem whose partial file fits, and the render kept."""
    output, _ = folders
    node = NODE_CLASS_MAPPINGS[name]
    stem = 255 - len("_00001.av_latent.safetensors") - len("...part") - 8
    assert node.VALIDATE_INPUTS(filename_prefix="x" * stem) is True
    assert node.VALIDATE_INPUTS(filename_prefix="é" * (stem // 2)) is True
    assert node.VALIDATE_INPUTS(filename_prefix="x" * (stem + 1)) == (
        f"filename_prefix: the name {'x' * 24!r}... is {stem + 1} bytes; a file system holds "
        f"{stem} there. Fix: shorten it (a prompt wired in as the prefix: its first words)"
    )
    verdict = node.VALIDATE_INPUTS(filename_prefix="y" * 256 + "/take")
    assert verdict.startswith("filename_prefix: the name 'yyyy") and "holds 255 there" in verdict
    assert node.VALIDATE_INPUTS(filename_prefix="é" * (stem // 2 + 1)).startswith(
        "filename_prefix: the name 'éé"
    )
    frames, sound = _clip()
    prompt = "a red fox runs through a snowy forest at dawn, golden light, " * 8
    if name == "SkyReelsV4SaveVideo":
        (saved,) = node().save(frames, 16.0, "é" + prompt, audio=sound)["ui"]["skyreels_videos"]
    else:
        from skyreels_core.types import AVLatent

        take = AVLatent(video=torch.zeros(1, 4, 3, 4, 6), audio=None, fps=16.0)
        (saved,) = node().save(take, "é" + prompt)["ui"]["skyreels_latents"]
    kept = ("é" + prompt).encode()[:stem].decode()
    assert saved["filename"] == f"{kept}_00001{suffix}"
    assert [p.name for p in output.rglob("*") if p.is_file()] == [saved["filename"]]
    # one byte past the room, though within a file name's 255, is shortened too, not refused
    if name == "SkyReelsV4SaveVideo":
        (over,) = node().save(frames, 16.0, "z" * (stem + 1), audio=sound)["ui"]["skyreels_videos"]
    else:
        (over,) = node().save(take, "z" * (stem + 1))["ui"]["skyreels_latents"]
    assert over["filename"] == "z" * stem + f"_00001{suffix}"
    # a cut inside a two-byte "é" (at byte 212) drops its half, not a "\ufffd" past the room
    if name == "SkyReelsV4SaveAVLatent":
        (split,) = node().save(take, "x" + "é" * 200)["ui"]["skyreels_latents"]
        assert split["filename"] == "x" + "é" * ((stem - 1) // 2) + f"_00001{suffix}"


@pytest.mark.parametrize(
    ("name", "suffix"),
    [("SkyReelsV4SaveVideo", ".mp4"), ("SkyReelsV4SaveAVLatent", ".av_latent.safetensors")],
)
def test_a_number_another_server_takes_during_the_save_is_passed_over(
    folders, monkeypatch, name, suffix
):
    """Two ComfyUI servers saving into one output folder: both picked take_00001, and the one
    that finished second threw its render away on "already exists"."""
    from skyreels_core import paths
    from skyreels_core.types import AVLatent

    output, _ = folders
    taken = output / f"take_00001{suffix}"
    new_partial = paths._new_partial

    def the_other_server_publishes_first(path):
        if not taken.exists():
            taken.write_bytes(b"the other server's render")
        return new_partial(path)

    monkeypatch.setattr(paths, "_new_partial", the_other_server_publishes_first)
    frames, sound = _clip()
    node = NODE_CLASS_MAPPINGS[name]()
    if name == "SkyReelsV4SaveVideo":
        (saved,) = node.save(frames, 16.0, "take", audio=sound)["ui"]["skyreels_videos"]
    else:
        take = AVLatent(video=torch.zeros(1, 4, 3, 4, 6), audio=None, fps=16.0)
        (saved,) = node.save(take, "take")["ui"]["skyreels_latents"]
    assert saved["filename"] == f"take_00002{suffix}"
    assert taken.read_bytes() == b"the other server's render"
    assert sorted(p.name for p in output.iterdir()) == [taken.name, saved["filename"]]


def test_a_prefix_ending_in_a_slash_names_the_file_as_the_host_does(folders):
    """The host's get_save_image_path normalises "videos/" to "videos": a file in the output
    folder itself, as the core save nodes write it."""
    output, _ = folders
    frames, _ = _clip()
    video = SAVE().save(frames, 16.0, "videos/")["ui"]["skyreels_videos"][0]
    assert (video["subfolder"], video["filename"]) == ("", "videos_00001.mp4")
    assert (output / "videos_00001.mp4").is_file()


def test_a_sub_folder_linked_to_another_drive_takes_the_render(folders, tmp_path):
    """Judged on the name as the host judges it: the link's target lies outside the output
    folder, the typed name does not."""
    output, _ = folders
    drive = tmp_path / "big_drive"
    drive.mkdir()
    output.mkdir()
    (output / "videos").symlink_to(drive)
    frames, _ = _clip()
    saved = SAVE().save(frames, 16.0, "videos/take")["ui"]["skyreels_videos"][0]
    assert (saved["subfolder"], saved["filename"]) == ("videos", "take_00001.mp4")
    assert (drive / "take_00001.mp4").is_file()
    with pytest.raises(InputError, match="leaves the output"):
        SAVE().save(frames, 16.0, "videos/../../x")
