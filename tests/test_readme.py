"""The README's scripting example runs as written and renders what it says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]


def _example() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- scripting-example -->\n```python\n(.*?)```", text, re.DOTALL)
    assert block, "README.md lost its scripting example"
    return block.group(1)


def test_the_scripting_example_renders_two_clips_with_sound(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(_example())
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=environment, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    clips = [tmp_path / "clip_0.mp4", tmp_path / "clip_1.mp4"]
    for seed, clip in enumerate(clips):
        with av.open(str(clip)) as container:
            assert len(container.streams.video) == 1 and len(container.streams.audio) == 1
            assert container.streams.video[0].frames == 33
            assert container.metadata["seed"] == str(seed)
    assert clips[0].read_bytes() != clips[1].read_bytes()
