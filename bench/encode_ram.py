"""Peak RAM of encoding a whole clip on the CPU, per video codec and clip size.

``python bench/encode_ram.py [--json bench/results/cpu_encode_ram.json] [--limit-gib 8]``

Each case runs in its own child process under an address-space limit (RLIMIT_AS), so a case
that would not fit fails alone instead of pressing on this machine. A child builds the codec,
warms it up on a tiny clip, resets its peak RSS (/proc/self/clear_refs), runs one call and
reports the peak (VmHWM, what ``ru_maxrss`` reads) minus the RSS just before the call: the RAM
the call added, libraries' workspaces included. Calls: ``encode`` (the codec's own encode of a
clip [1, T, H, W, 3]) and ``video_to_audio`` (Mask: Video to Audio's path: a quarter-size source
resized to ``longest_side`` and encoded). Codecs: the bundled demo codec, the tests' tiny Wan 2.1
VAE and the full-size Wan 2.1 VAE config (random weights: memory does not depend on their
values). Each row also gives the call's peak of tracked tensor bytes (run again) and the
pre-flight check's estimate for it, which must stay below both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {  # codec -> (frames, longest side) of square clips
    "demo": [(17, 256), (33, 256), (17, 512), (33, 512), (65, 512), (33, 768)],
    "wan_tiny": [(17, 256), (17, 512), (65, 512)],
    "wan_full": [(5, 128), (17, 128), (5, 192), (5, 256)],
}


def _codec(name: str):
    import torch

    if name == "demo":
        from skyreels_core.demo.bundle import video_codec

        return video_codec()
    from diffusers import AutoencoderKLWan

    from skyreels_core.codecs.wan_vae import CONFIG, WanVideoCodec

    if name == "wan_tiny":
        sys.path.insert(0, str(ROOT / "tests"))
        from codec_helpers import TINY as config
    else:
        config = {k: v for k, v in json.loads(CONFIG.read_text()).items() if k[0] != "_"}
    torch.manual_seed(0)
    return WanVideoCodec(AutoencoderKLWan.from_config(config))


def child(codec_name: str, call: str, frames: int, side: int) -> dict:
    """One call measured in this process (a fresh one, under the parent's address-space limit):
    its peak RSS, then, run again, its peak of tracked tensor bytes (every tensor an aten op
    makes, until freed): RSS without the allocator's and the libraries' share, so a steadier
    floor of it."""
    import torch

    from skyreels_core import masks, memory
    from skyreels_core.benchmark.instruments import TrackedTensorBytes, rss_added_by

    codec = _codec(codec_name)
    codec.encode(torch.rand(1, 5, 32, 32, 3))  # lazy initialisation outside the measurement
    estimate = memory.codec_ram_bytes(codec, "encode", frames, side, side)
    if call == "encode":
        clip = torch.rand(1, frames, side, side, 3)
        run = lambda: codec.encode(clip)  # noqa: E731
    else:
        source = torch.rand(frames, side // 4, side // 4, 3)
        run = lambda: masks.video_to_audio(codec, source, side)  # noqa: E731
        estimate += masks.BUILT_CLIP_COPIES * memory.clip_bytes(frames, side, side)
    peak = rss_added_by(run)
    with TrackedTensorBytes() as tracked:
        run()
    clip_bytes = memory.clip_bytes(frames, side, side)
    return {"codec": codec_name, "call": call, "frames": frames, "side": side,
            "clip_bytes": clip_bytes, "peak_added_bytes": peak, "peak_over_clip": peak / clip_bytes,
            "tracked_peak_bytes": tracked.peak, "estimate_bytes": estimate,
            "estimate_over_peak": estimate / peak,
            "estimate_over_tracked": estimate / tracked.peak}  # fmt: skip


def _run_case(limit_gib: float, *case) -> dict:
    limit = int(limit_gib * 2**30)
    done = subprocess.run(
        [sys.executable, __file__, "--child", *map(str, case)],
        capture_output=True,
        text=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)),
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
    )
    if done.returncode != 0:
        return {"case": case, "failed": done.stderr[-500:]}
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--limit-gib", type=float, default=8.0)
    parser.add_argument("--only", nargs="*", choices=list(CASES), default=list(CASES))
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        codec_name, call, frames, side = args.child
        print(json.dumps(child(codec_name, call, int(frames), int(side))))
        return
    rows = []
    for codec_name in args.only:
        for frames, side in CASES[codec_name]:
            for call in ("encode", "video_to_audio"):
                row = _run_case(args.limit_gib, codec_name, call, frames, side)
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.json:
        import torch

        cpu = re.search(r"model name\s*: (.*)", Path("/proc/cpuinfo").read_text())
        machine = {"machine": f"{cpu[1] if cpu else platform.machine()}, {os.cpu_count()} cores",
                   "torch": torch.__version__, "limit_gib": args.limit_gib}  # fmt: skip
        args.json.write_text(json.dumps({**machine, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
