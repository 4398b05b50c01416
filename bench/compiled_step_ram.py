"""Peak RAM of one model pass on the CPU, eager and under torch.compile, against the least the
CPU's RAM refusal counts for it.

``python bench/compiled_step_ram.py [--json bench/results/cpu_compiled_step_ram.json]``

Inductor writes a GELU over its input and frees dead buffers sooner than eager PyTorch, so a
compiled pass can hold less than the eager one: the refusal's count (``activation_bytes(...,
least=True)``) switches to what any execution holds while compiled steps are set, and this
measures that both counts stay below their pass's peak. Each case runs in its own child process
with glibc told to map every allocation over 64 KiB by itself (``MALLOC_MMAP_THRESHOLD_``), so a
freed tensor leaves the RSS at once and the peak RSS a call adds (VmHWM after a reset through
/proc/self/clear_refs, minus the RSS just before) is what its tensors held at most. The pass is
warmed up twice first (compiling, lazy initialisation). Models: the 14B preset's shape and Wan
2.1 14B's (dual-stream blocks only) at a CPU width, random weights, float32.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("skyreels", "wan")
LATENTS = (9, 32, 32)  # frames, height, width: 2,304 video tokens
AUDIO_TOKENS, TEXT_TOKENS, WIDTH = 54, 64, 512


def _model(name: str):
    import torch

    from skyreels_core.benchmark.instruments import scaled_preset
    from skyreels_core.mmdit import DualStreamMMDiT

    if name == "skyreels":
        config = scaled_preset(WIDTH, dual=2, single=1)
    else:
        config = scaled_preset(WIDTH, dual=3, single=0, preset="wan2.1-t2v-14b")
    torch.manual_seed(0)
    return DualStreamMMDiT(config).eval()


def child(name: str, compiled: bool) -> dict:
    """One pass measured in this process (a fresh one): its peak RSS added and the least counted."""
    import torch

    from skyreels_core.benchmark.instruments import rss_added_by, step_inputs
    from skyreels_core.runtime import LoadedModel

    model = _model(name)
    video, timestep, text, audio = step_inputs(model.config, LATENTS[0], LATENTS[1], AUDIO_TOKENS, TEXT_TOKENS, width=LATENTS[2])  # fmt: skip
    with torch.no_grad(), LoadedModel(model, name, compile=compiled).on("cpu") as module:
        run = lambda: module(video, timestep, text, audio=audio)  # noqa: E731
        run(), run()
        peak = rss_added_by(run)
        counted = ([video.shape], 0 if audio is None else AUDIO_TOKENS, TEXT_TOKENS, 1)
        least = module.activation_bytes(*counted, least=True)
    eager_count = model.activation_bytes(*counted, least=True)  # compiled steps unset again
    return {"model": name, "compiled": compiled, "peak_added_bytes": peak, "least_bytes": least,
            "least_over_peak": least / peak, "eager_count_over_peak": eager_count / peak}  # fmt: skip


def _run_case(name: str, compiled: bool) -> dict:
    environment = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT),
                   "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}  # fmt: skip
    done = subprocess.run([sys.executable, __file__, "--child", name, str(int(compiled))],
                          capture_output=True, text=True, env=environment)  # fmt: skip
    if done.returncode != 0:
        return {"model": name, "compiled": compiled, "failed": done.stderr[-500:]}
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], bool(int(args.child[1])))))
        return
    rows = []
    for name in MODELS:
        for compiled in (False, True):
            rows.append(_run_case(name, compiled))
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        import torch

        cpu = re.search(r"model name\s*: (.*)", Path("/proc/cpuinfo").read_text())
        machine = {"machine": f"{cpu[1] if cpu else platform.machine()}, {os.cpu_count()} cores",
                   "torch": torch.__version__, "width": WIDTH, "latents": LATENTS,
                   "audio_tokens": AUDIO_TOKENS, "text_tokens": TEXT_TOKENS}  # fmt: skip
        args.json.write_text(json.dumps({**machine, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
