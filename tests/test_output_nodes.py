"""Save Video keeps a clip in the output folder; Preview Video only plays it, from the temp folder."""

from __future__ import annotations

import av
import pytest
import torch
from skyreels_pack import NODE_CLASS_MAPPINGS

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


def test_save_video_keeps_the_clip_in_the_output_folder(folders):
    output, temp = folders
    frames, sound = _clip()
    saved = SAVE().save(frames, 16.0, "clips/take", audio=sound)["ui"]["skyreels_videos"][0]
    assert (saved["type"], saved["subfolder"]) == ("output", "clips")
    assert (output / "clips" / saved["filename"]).is_file() and not temp.exists()
