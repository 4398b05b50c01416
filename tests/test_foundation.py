"""The pack installs and imports like a ComfyUI custom node package, with and without the host."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from skyreels_core.codecs.wan_vae import ram_lower_bound
from skyreels_core.errors import InputError
from skyreels_core.paths import resolve_inside
from skyreels_core.shapes import latent_frame_count, latent_size, latent_to_pixel_frames

ROOT = Path(__file__).resolve().parents[1]

LOAD_AS_COMFYUI = textwrap.dedent(
    """
    import importlib.util, sys, json
    folder = sys.argv[1]
    name = folder.rstrip('/').split('/')[-1]
    spec = importlib.util.spec_from_file_location(name, folder + '/__init__.py',
                                                  submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    print(json.dumps({
        'nodes': sorted(module.NODE_CLASS_MAPPINGS),
        'display': sorted(module.NODE_DISPLAY_NAME_MAPPINGS),
        'web': module.WEB_DIRECTORY,
        'comfy_loaded': 'comfy' in sys.modules,
        'core_from': sys.modules['skyreels_core'].__file__,
    }))
    """
)


def _load_in_subprocess(folder: Path, extra_path: Path | None = None) -> dict:
    import json
    import os

    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = str(extra_path)
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AS_COMFYUI, str(folder)],
        capture_output=True,
        text=True,
        cwd=folder.parent,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pack_imports_from_a_hyphenated_folder_without_comfyui(tmp_path):
    folder = tmp_path / "ComfyUI-SkyReels-V4"
    folder.symlink_to(ROOT, target_is_directory=True)
    info = _load_in_subprocess(folder)
    assert info["web"] == "./js"
    assert info["comfy_loaded"] is False
    assert info["nodes"] == info["display"]
    assert Path(info["core_from"]).resolve() == (ROOT / "skyreels_core" / "__init__.py").resolve()
    assert (ROOT / "js").is_dir()


def test_pack_loads_on_a_torch_without_flex_attention(tmp_path):
    """FlexAttention (torch 2.5+) serves only sparse refining: a module-level import of it,
    reached through the refiner at start-up, stopped every node loading on an older torch."""
    (tmp_path / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import importlib.abc, sys

            class NoFlex(importlib.abc.MetaPathFinder):
                def find_spec(self, name, path, target=None):
                    if name == "torch.nn.attention.flex_attention":
                        raise ModuleNotFoundError(name)

            sys.meta_path.insert(0, NoFlex())
            """
        )
    )
    folder = tmp_path / "ComfyUI-SkyReels-V4"
    folder.symlink_to(ROOT, target_is_directory=True)
    info = _load_in_subprocess(folder, extra_path=tmp_path)
    assert len(info["nodes"]) == len(info["display"]) > 30


FAKE_HOST = {
    "folder_paths.py": """
        import os
        models_dir = os.environ['FAKE_MODELS']
        folder_names_and_paths = {
            'diffusion_models': ([os.path.join(models_dir, 'diffusion_models')], {'.safetensors'}),
            'text_encoders': ([os.path.join(models_dir, 'text_encoders')], {'.safetensors'}),
            'vae': ([os.path.join(models_dir, 'vae')], {'.safetensors'}),
        }
        def add_model_folder_path(name, path, is_default=False):
            folder_names_and_paths.setdefault(name, ([], set()))[0].append(path)
        def get_folder_paths(name):
            return folder_names_and_paths[name][0]
        def get_filename_list(name):
            out = []
            for root in get_folder_paths(name):
                for dirpath, _, files in os.walk(root):
                    out += [os.path.relpath(os.path.join(dirpath, f), root) for f in files]
            return sorted(out)
        def get_input_directory():
            return os.path.join(models_dir, '..', 'input')
        def get_output_directory():
            return os.path.join(models_dir, '..', 'output')
    """,
    "comfy/__init__.py": "",
    "comfy/model_management.py": """
        import torch
        class InterruptProcessingException(Exception):
            pass
        interrupted = False
        def get_torch_device():
            return torch.device('cpu')
        def unet_offload_device():
            return torch.device('cpu')
        def intermediate_device():
            return torch.device('cpu')
        def soft_empty_cache():
            pass
        def throw_exception_if_processing_interrupted():
            if interrupted:
                raise InterruptProcessingException()
        freed = []
        def minimum_inference_memory():
            return 1000
        def free_memory(memory_required, device, keep_loaded=[]):
            freed.append((memory_required, str(device)))
    """,
    "comfy/latent_formats.py": """
        class Wan21:
            latent_rgb_factors = [[0.1 * c, -0.05 * c, 0.02] for c in range(16)]
            latent_rgb_factors_bias = [-0.2, 0.0, 0.4]
            def process_in(self, latent):
                return (latent - 1.0) / 2.0
            def process_out(self, latent):
                return latent * 2.0 + 1.0
    """,
    "comfy/cli_args.py": """
        import types
        args = types.SimpleNamespace(disable_metadata=True)  # the server's --disable-metadata
    """,
    "comfy/ldm/wan/vae.py": """
        class WanVAE:
            dim, num_res_blocks = 96, 2
    """,
    "comfy/utils.py": """
        class ProgressBar:
            calls = []
            def __init__(self, total, node_id=None):
                self.total = total
            def update_absolute(self, value, total=None, preview=None):
                ProgressBar.calls.append((value, total, preview is not None))
    """,
}


def test_inside_comfyui_the_adapter_registers_folders_and_uses_host_services(tmp_path):
    host_dir = tmp_path / "host"
    for relative, source in FAKE_HOST.items():
        path = host_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    models = tmp_path / "models"
    (models / "audio_vae").mkdir(parents=True)
    (models / "audio_vae" / "mmaudio.safetensors").write_bytes(b"x")
    inputs = tmp_path / "input"  # the fake host's input folder
    inputs.mkdir()
    (inputs / "skyreels_v4_first_frame.png").write_bytes(b"the artist's own file")
    script = textwrap.dedent(
        f"""
        import os, sys, json
        os.environ['FAKE_MODELS'] = {str(models)!r}
        sys.path.insert(0, {str(host_dir)!r})
        sys.path.insert(0, {str(ROOT / "tests")!r})
        import conftest
        pack = conftest.load_pack('My-Pack')
        host = sys.modules['My-Pack.nodes.host']
        import folder_paths, comfy.model_management as mm, comfy.utils as cu
        bar = host.Progress(4, node_id='7')
        bar.update(2)
        mm.interrupted = True
        try:
            host.check_interrupt()
            interrupted = False
        except mm.InterruptProcessingException:
            interrupted = True
        import torch
        import comfy.ldm.wan.vae
        class FakeWanVAE:
            latent_channels, latent_dim, downscale_index_formula = 16, 3, (4, 8, 8)
            first_stage_model = comfy.ldm.wan.vae.WanVAE()
            device, vae_dtype = torch.device('cpu'), torch.bfloat16
            def encode(self, frames):
                return torch.full((1, 16, 1 + (frames.shape[0] - 1) // 4, 2, 2), 3.0)
            def decode(self, latents):
                return latents.mean().expand(1, 5, 16, 16, 3) / 10
        class HunyuanVAE(FakeWanVAE):  # HunyuanVideo's: Wan's channels and strides, another model
            first_stage_model = object()
        for device in ('meta', 'cpu'):  # 'meta' stands in for a GPU
            host.make_room(torch.nn.Linear(4, 4), torch.device(device), extra_bytes=500)
        codec = host.HostWanVideoCodec(FakeWanVAE())
        latents = codec.encode(torch.zeros(1, 5, 16, 16, 3))
        print(json.dumps({{
            'wan': host.is_host_wan_vae(FakeWanVAE()),
            'hunyuan': host.is_host_wan_vae(HunyuanVAE()),
            'no_metadata': host.metadata_disabled(),
            'latent_mean': latents.mean().item(), 'latent_shape': list(latents.shape),
            'decoded': codec.decode(latents).mean().item(),
            'ram': [codec.encode_ram_bytes(5, 16, 32), codec.decode_ram_bytes(5, 16, 32)],
            'on_cpu': __import__('skyreels_core.memory').memory.computes_on_cpu(codec),
            'preview': sys.modules['My-Pack.nodes.previews']._previewer(codec)(
                torch.ones(1, 16, 3, 2, 2) / 30)[0, 0].tolist(),
            'in_comfy': host.IN_COMFYUI,
            'keys': sorted(folder_paths.folder_names_and_paths),
            'audio': host.list_models('audio_vae'),
            'bar': cu.ProgressBar.calls,
            'interrupted': interrupted,
            'freed': mm.freed,
        }}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    import json

    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["in_comfy"] is True
    assert info["wan"] is True
    assert info["no_metadata"] is True
    assert info["hunyuan"] is False  # HunyuanVideo's VAE: Wan's channels and strides, not its model
    assert info["latent_shape"] == [1, 16, 2, 2, 2] and info["latent_mean"] == 1.0  # (3 - 1) / 2
    assert abs(info["decoded"] - 0.3) < 1e-6  # (1 * 2 + 1) / 10
    # The pre-flight RAM check reads the host VAE's device, width, depth and dtype (bf16: 2 bytes)
    assert info["on_cpu"] is True
    assert info["ram"] == [
        ram_lower_bound(way, 96, 2, 2, 5, 16, 32) for way in ("encode", "decode")
    ]
    assert info["ram"][0] - info["ram"][1] == 5 * 16 * 32 * 3 * 2  # the clip: float32 in, bf16 out
    # The host's own Wan 2.1 preview factors, its -1..1 mapped to 0..1: latents of 1/30 on all 16
    # channels give (sum of the factors / 30 + bias + 1) / 2.
    expected = [(12.0 / 30 - 0.2 + 1) / 2, (-6.0 / 30 + 1) / 2, (0.32 / 30 + 0.4 + 1) / 2]
    assert info["preview"] == pytest.approx(expected, abs=1e-6)
    assert {"skyreels_audio_vae", "skyreels_refiner"} <= set(info["keys"])
    assert info["audio"] == ["mmaudio.safetensors"]
    assert info["bar"] == [[2, 4, False]]
    assert info["interrupted"] is True
    # Room for a Linear(4, 4) (80 bytes), a LoRA's 500 and the host's reserve, only on the GPU.
    assert info["freed"] == [[80 + 500 + 1000, "meta"]]
    # Loading the pack put the workflows' example inputs where the host's loaders look, without
    # replacing the file of the same name already there.
    assets = sorted((ROOT / "workflows" / "assets").iterdir())
    assert sorted(p.name for p in inputs.iterdir()) == sorted(
        [".skyreels_v4_examples", *(p.name for p in assets)]
    )
    assert (inputs / "skyreels_v4_first_frame.png").read_bytes() == b"the artist's own file"
    for asset in assets:
        if asset.name != "skyreels_v4_first_frame.png":
            assert (inputs / asset.name).read_bytes() == asset.read_bytes(), asset.name


def test_example_inputs_are_copied_only_inside_the_host_and_never_fatally(
    tmp_path, monkeypatch, caplog
):
    from skyreels_pack.nodes import host

    assets = ROOT / "workflows" / "assets"
    target = tmp_path / "input"
    assert host.install_example_inputs(assets) == []  # standalone: the tests' cwd stays clean
    monkeypatch.setattr(host, "IN_COMFYUI", True)
    monkeypatch.setattr(host, "folder_paths", SimpleNamespace(get_input_directory=lambda: target))
    monkeypatch.setenv("SKYREELS_NO_EXAMPLE_INPUTS", "1")
    assert host.install_example_inputs(assets) == [] and not target.exists()
    monkeypatch.delenv("SKYREELS_NO_EXAMPLE_INPUTS")
    copied = host.install_example_inputs(assets)
    assert copied == sorted(p.name for p in assets.iterdir())
    listed = sorted(p.name for p in target.iterdir())
    assert listed == sorted([*copied, host.EXAMPLES_OFFERED])  # no partial file left behind
    assert host.install_example_inputs(assets) == []  # the next start finds them in place
    # A deleted example stays deleted; one a pack update adds is copied on the next start.
    (target / copied[0]).unlink()
    updated = tmp_path / "updated_assets"
    shutil.copytree(assets, updated)
    (updated / "skyreels_v4_new.png").write_bytes(b"new")
    assert host.install_example_inputs(updated) == ["skyreels_v4_new.png"]
    assert not (target / copied[0]).exists()
    blocked = tmp_path / "not_a_folder"
    blocked.write_text("x")
    monkeypatch.setattr(host, "folder_paths", SimpleNamespace(get_input_directory=lambda: blocked))
    assert host.install_example_inputs(assets) == []
    assert "could not copy the example inputs" in caplog.text


def test_adapter_fallbacks_without_comfyui(tmp_path, monkeypatch):
    from skyreels_pack.nodes import host

    assert host.IN_COMFYUI is False
    monkeypatch.setenv("SKYREELS_MODELS_DIR", str(tmp_path))
    (tmp_path / "diffusion_models" / "sub").mkdir(parents=True)
    (tmp_path / "diffusion_models" / "sub" / "a.safetensors").write_bytes(b"x")
    (tmp_path / "diffusion_models" / "notes.txt").write_text("x")
    assert host.models_dir() == tmp_path
    assert host.list_models("diffusion_models") == ["sub/a.safetensors"]
    assert host.model_path("diffusion_models", "sub/a.safetensors").name == "a.safetensors"
    with pytest.raises(InputError, match="outside"):
        host.model_path("diffusion_models", "../../etc/passwd")
    with pytest.raises(InputError, match="diffusion_models"):
        host.model_path("diffusion_models", "missing.safetensors")
    assert host.torch_device().type in {"cpu", "cuda", "mps"}
    assert host.offload_device() == torch.device("cpu")
    host.check_interrupt()  # standalone: never raises
    bar = host.Progress(3)
    bar.update(1)
    bar.update(3)
    assert bar.value == 3 and bar._bar.n == 3
    bar.close()


def test_resolve_inside_refuses_escapes(tmp_path):
    (tmp_path / "ok.png").write_bytes(b"x")
    assert resolve_inside(tmp_path, "ok.png") == (tmp_path / "ok.png").resolve()
    bad_names = ["/etc/passwd", "../x", "a/../../x", "", "a\x00b", ".", "./"]
    windows_escapes = ["\\secret", "D:rel\\x", "C:\\x", "\\\\server\\share\\x", "..\\x"]
    for bad in bad_names + windows_escapes:
        with pytest.raises(InputError):
            resolve_inside(tmp_path, bad)
        with pytest.raises(InputError):
            resolve_inside(tmp_path, bad, exists=Path.is_dir)


def test_resolve_inside_refuses_escapes_that_lead_to_real_files(tmp_path):
    """Every escape is refused for what the name says, not because nothing is there: the files
    the names reach exist (on Linux a Windows escape such as "D:x" is one plain file name), so
    only the containment checks stand between the typed text and a file outside the folder."""
    root = tmp_path / "input"
    (root / "a").mkdir(parents=True)
    (tmp_path / "x").write_bytes(b"secret")
    windows_escapes = ["\\secret", "D:x", "C:\\x", "\\\\server\\share\\x", "..\\x"]
    for name in windows_escapes:
        (root / name).write_bytes(b"x")  # reachable on Linux, outside the folder on Windows
    for bad in windows_escapes[:4]:
        with pytest.raises(InputError, match="is not a plain file name"):
            resolve_inside(root, bad)
    for bad in ["../x", "a/../../x", "..\\x"]:
        with pytest.raises(InputError, match="points outside"):
            resolve_inside(root, bad)
    with pytest.raises(InputError, match="is not a plain file name"):  # a check that says yes
        resolve_inside(root, "a\x00b", exists=lambda path: True)


def test_resolve_inside_searches_every_folder_in_order(tmp_path):
    """The host can list several folders for one kind of model (extra_model_paths.yaml): a file
    in the first was "not found" when only the later ones were searched, and a name in two
    folders must open the first one's, as ComfyUI's folder_paths does."""
    first, second = tmp_path / "models", tmp_path / "extra"
    for folder in (first, second):
        folder.mkdir()
    (first / "only_first.safetensors").write_bytes(b"1")
    (second / "only_second.safetensors").write_bytes(b"2")
    (first / "both.safetensors").write_bytes(b"1")
    (second / "both.safetensors").write_bytes(b"2")
    roots = [first, second]
    assert resolve_inside(roots, "only_first.safetensors") == first / "only_first.safetensors"
    assert resolve_inside(roots, "only_second.safetensors") == second / "only_second.safetensors"
    assert resolve_inside(roots, "both.safetensors") == first / "both.safetensors"


def test_a_fingerprint_changes_with_a_file_in_a_subfolder_or_its_time(tmp_path):
    """A model kept as a folder (a release with a text_encoder/ subfolder) reloads when any file
    under it is replaced: a fingerprint of the top level alone, or of sizes alone (a retrained
    file of the same size), kept serving the old weights."""
    import os

    from skyreels_core.paths import fingerprint

    release = tmp_path / "release"
    (release / "text_encoder").mkdir(parents=True)
    weights = release / "text_encoder" / "model.safetensors"
    weights.write_bytes(b"old weights")
    os.utime(weights, ns=(1_000_000_000, 1_000_000_000))
    before = fingerprint([release])
    assert before == f"{weights}:11:1000000000"
    weights.write_bytes(b"new weights")  # same size
    os.utime(weights, ns=(2_000_000_000, 2_000_000_000))
    assert fingerprint([release]) == f"{weights}:11:2000000000"


def test_a_partial_file_is_hidden_while_it_is_written(tmp_path):
    """A render mid-write sits beside the real name under a dot name, so the host's file lists
    and file managers do not offer a truncated "clip.1a2b3c4d.mp4.part" as a file to load."""
    from skyreels_core.paths import published

    path = tmp_path / "clip.mp4"
    with published(path) as partial:
        partial.write_bytes(b"frames")
        assert [p.name for p in tmp_path.iterdir()] == [partial.name]
        assert partial.name.startswith(".clip.") and partial.name.endswith(".mp4.part")
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_a_folder_that_refuses_the_replacement_is_a_denial_not_a_file_in_use(tmp_path, monkeypatch):
    """Replacing a name that holds no file fails only because the folder refuses writes: that is
    no file another program holds open, so the error stays the denial, with no "(new 1)" file
    published beside a name that was never there."""
    import errno
    import os

    from skyreels_core.paths import published

    def denied(source, target):
        raise PermissionError(errno.EACCES, "Permission denied", str(target))

    monkeypatch.setattr(os, "replace", denied)
    path = tmp_path / "report.json"
    with pytest.raises(PermissionError, match="Permission denied"):
        with published(path, overwrite=True) as partial:
            partial.write_text("{}")
    assert list(tmp_path.iterdir()) == []


def test_shape_rules_name_the_fix():
    assert latent_frame_count(81) == 21
    assert latent_frame_count(1) == 1
    with pytest.raises(InputError, match="use 81 or 85 frames"):
        latent_frame_count(83)
    assert latent_size(64) == 8
    with pytest.raises(InputError, match="use 64 or 72 px"):
        latent_size(70)
    assert list(latent_to_pixel_frames(0)) == [0]
    assert list(latent_to_pixel_frames(2)) == [5, 6, 7, 8]


def test_cli_lists_its_commands(capsys):
    from skyreels_core.__main__ import main

    with pytest.raises(SystemExit):
        main(["--help"])
    assert "demo" in capsys.readouterr().out


def test_requirements_never_pin_torch():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    names = [
        line.split(">")[0].split("=")[0].strip().lower()
        for line in lines
        if line and not line.startswith("#")
    ]
    assert "torch" not in names and "torchaudio" not in names
    assert "safetensors" in names and "av" in names


def test_frame_index_parsing():
    from skyreels_core.shapes import parse_frame_indices

    assert parse_frame_indices("16, 0; -1", 33) == [0, 16, 32]
    for bad, message in [
        ("", "no frame"),
        ("a", "not a frame"),
        ("33", "outside"),
        ("-34", "outside"),
    ]:
        with pytest.raises(InputError, match=message):
            parse_frame_indices(bad, 33)


def test_latent_index_of_frame_inverts_the_grouping():
    from skyreels_core.shapes import latent_index_of_frame

    for latent in range(6):
        assert all(
            latent_index_of_frame(frame) == latent for frame in latent_to_pixel_frames(latent)
        )


def test_auto_dtype_is_fp32_on_cpu():
    """fp32 on the CPU and any device neither CUDA nor Apple's (an Intel XPU): only a CUDA card
    is asked for its compute capability, which on another device raised instead."""
    from skyreels_core.runtime import resolve_dtype

    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert resolve_dtype("auto", "xpu") == torch.float32


def test_auto_dtype_is_bf16_only_on_cards_that_compute_it(monkeypatch):
    """Before Ampere a card stores bf16 but emulates its math and runs attention in it with the
    math kernel (the full score matrix): torch.cuda.is_bf16_supported() says True there, so auto
    reads the compute capability of the render's own card instead."""
    from skyreels_core.runtime import resolve_dtype

    cards = {0: 8, 1: 7}  # cuda:0 an RTX 3090 (sm86), cuda:1 an RTX 2080 (sm75)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda device: SimpleNamespace(major=cards[torch.device(device).index]),
    )
    assert resolve_dtype("auto", "cuda:0") == torch.bfloat16
    assert resolve_dtype("auto", "cuda:1") == torch.float32
    assert resolve_dtype("bf16", "cuda:1") == torch.bfloat16  # asked for outright: as asked
    # A text encoder's weights fill the card, not its attention: fp32 would double a 7B's 16 GB
    assert resolve_dtype("auto", "cuda:1", weights_dominate=True) == torch.bfloat16
    assert resolve_dtype("auto", "cpu", weights_dominate=True) == torch.float32
    monkeypatch.setattr(torch.version, "hip", "6.4")
    assert resolve_dtype("auto", "cuda:1") == torch.bfloat16  # ROCm computes it on every arch


def test_auto_dtype_is_bf16_on_an_apple_gpu_from_macos_14(monkeypatch):
    """As ComfyUI's own rule for Macs: fp32 before macOS 14, bf16 from it (fp32 doubled the
    model in memory the GPU shares with everything else)."""
    import platform

    from skyreels_core.runtime import macos_version, resolve_dtype

    assert macos_version() == ()  # not a Mac: CPU and CUDA as before
    for release, dtype in [
        ("13.6.1", torch.float32),
        ("14.0", torch.bfloat16),
        ("15.2", torch.bfloat16),
    ]:
        monkeypatch.setattr(
            platform, "mac_ver", lambda release=release: (release, ("", "", ""), "arm64")
        )
        assert resolve_dtype("auto", "mps") == dtype, release
        assert resolve_dtype("auto", "cpu") == torch.float32
        assert resolve_dtype("fp16", "mps") == torch.float16


def test_models_linked_in_from_another_drive_load_and_typed_names_stay_inside(
    tmp_path, monkeypatch
):
    """A file or folder linked into a models folder (kept on a bigger drive) is the machine
    owner's choice and opens, as ComfyUI opens it; a typed name still cannot climb out."""
    from skyreels_pack.nodes import host

    drive, models = tmp_path / "big_drive", tmp_path / "models"
    (drive / "Qwen2.5-VL").mkdir(parents=True)
    (drive / "wan.safetensors").write_bytes(b"x")
    (models / "diffusion_models").mkdir(parents=True)
    (models / "text_encoders").mkdir()
    (models / "diffusion_models" / "wan.safetensors").symlink_to(drive / "wan.safetensors")
    (models / "text_encoders" / "Qwen2.5-VL").symlink_to(drive / "Qwen2.5-VL")
    monkeypatch.setenv("SKYREELS_MODELS_DIR", str(models))
    assert host.list_models("diffusion_models") == ["wan.safetensors"]
    assert host.model_path("diffusion_models", "wan.safetensors").read_bytes() == b"x"
    assert host.list_model_dirs("text_encoders") == ["Qwen2.5-VL"]
    assert host.model_dir_path("text_encoders", "Qwen2.5-VL").is_dir()
    for bad in ("../../big_drive/wan.safetensors", "Qwen2.5-VL/../../../big_drive"):
        with pytest.raises(InputError, match="outside"):
            host.model_path("diffusion_models", bad)
    with pytest.raises(InputError, match="not found"):
        host.model_dir_path("text_encoders", "wan.safetensors")  # a file is no folder
