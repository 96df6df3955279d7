"""The conversion cache heals: damaged converted weights are rebuilt once, with a note, never a traceback.

One real conversion of SmolLM2 (~20 s) fills a pristine folder for the whole module. Each case
links it into its own cache directory and breaks its weights there. Rebuilds run the real staging,
manifest, rename and verification code; only the slow dequantisation (which the pristine
conversion ran for real) is replaced by linking the pristine files. Hard links spare the disk
500 MB of writes per case, so a damaged file is always a new file, never one written through.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch

from attention_viz import cli, loading
from attention_viz.capture import capture
from attention_viz.errors import UserFacingError
from attention_viz.loading import load_model, needs_conversion
from attention_viz.settings import Settings

WEIGHTS = "model.safetensors"
TEXT = "The cat sat on the mat because it was tired."


def link_or_copy(source: Path | str, target: Path | str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Iterator[Path]:
    """A healthy conversion folder, made by one real conversion into a private cache directory."""
    cache_dir = tmp_path_factory.mktemp("pristine-cache")
    loaded = load_model("smollm2", Settings(cache_dir=cache_dir))
    assert loaded.notes == ()
    (folder,) = [entry for entry in cache_dir.iterdir() if not entry.name.startswith(".")]
    yield folder
    assert loading._damage(folder) is None, "a test wrote through a hard link into the pristine folder"


@pytest.fixture
def cache(tmp_path, pristine) -> Settings:
    """Settings whose cache directory holds a linked copy of the pristine conversion."""
    cache_dir = tmp_path / "cache"
    shutil.copytree(pristine, cache_dir / pristine.name, copy_function=link_or_copy)
    return Settings(cache_dir=cache_dir)


@pytest.fixture
def conversions(monkeypatch, pristine) -> list[Path]:
    """Replace the slow dequantisation by linking the pristine files; list each staging folder."""
    calls: list[Path] = []

    def link_pristine(spec, gguf, folder: Path) -> None:
        calls.append(folder)
        for file in pristine.iterdir():
            if file.name != loading.MANIFEST:  # the converter writes its own
                link_or_copy(file, folder / file.name)

    monkeypatch.setattr(loading, "_dequantise", link_pristine)
    return calls


def weights_file(settings: Settings) -> Path:
    (folder,) = [entry for entry in settings.cache_dir.iterdir() if not entry.name.startswith(".")]
    return folder / WEIGHTS


def replace_weights(settings: Settings, data: bytes) -> Path:
    """Put ``data`` in a new weights file (the old one is a hard link to the pristine weights)."""
    path = weights_file(settings)
    path.unlink()
    path.write_bytes(data)
    return path


def assert_healed(loaded, settings: Settings) -> None:
    """Finite attention in every layer; one note that says what happened, without a server path."""
    result = capture(loaded, TEXT, effect=False)
    assert sorted(result.layers) == list(range(30))
    for layer, record in result.layers.items():
        assert torch.isfinite(record.weights).all(), f"layer {layer} has non-finite attention"
    assert len(loaded.notes) == 1, loaded.notes
    (note,) = loaded.notes
    assert "smollm2" in note and "converted again" in note
    assert "/" not in note and "\n" not in note
    assert not needs_conversion("smollm2", settings)
    assert [entry.name for entry in settings.cache_dir.iterdir()] == [weights_file(settings).parent.name]


def test_a_fresh_conversion_records_every_file_size_and_sha256_in_a_manifest_written_last(pristine):
    manifest = json.loads((pristine / loading.MANIFEST).read_text())
    assert manifest["format"] == loading.CACHE_FORMAT
    listed = set(manifest["files"])
    assert listed == {file.name for file in pristine.iterdir()} - {loading.MANIFEST}
    assert manifest["files"][WEIGHTS]["size"] == (pristine / WEIGHTS).stat().st_size
    assert len(manifest["files"][WEIGHTS]["sha256"]) == 64


def test_a_healthy_cache_loads_without_converting_or_a_note(cache, conversions):
    assert not needs_conversion("smollm2", cache)
    loaded = load_model("smollm2", cache)
    assert loaded.notes == ()
    assert conversions == []


def test_a_truncated_weights_file_is_converted_again_with_a_note(cache, conversions, pristine):
    with (pristine / WEIGHTS).open("rb") as file:  # was: a SafetensorError traceback on every load
        replace_weights(cache, file.read((pristine / WEIGHTS).stat().st_size // 5))
    assert needs_conversion("smollm2", cache)
    assert_healed(load_model("smollm2", cache), cache)
    assert len(conversions) == 1


def test_a_garbage_weights_file_is_converted_again_with_a_note(cache, conversions):
    replace_weights(cache, os.urandom(1 << 20))  # was: SafetensorError "header too large"
    assert_healed(load_model("smollm2", cache), cache)
    assert len(conversions) == 1


def test_a_deleted_weights_file_is_converted_again_with_a_note(cache, conversions):
    weights_file(cache).unlink()  # was: a 20 s conversion, then OSError "Directory not empty", every load
    assert needs_conversion("smollm2", cache)
    assert_healed(load_model("smollm2", cache), cache)
    assert len(conversions) == 1
    assert load_model("smollm2", cache).notes == ()  # healed for good: the next load is quiet
    assert len(conversions) == 1


def test_random_bytes_inside_the_weights_are_caught_and_converted_again(cache, conversions, pristine):
    path = replace_weights(cache, (pristine / WEIGHTS).read_bytes())
    with path.open("r+b") as file:  # 2 MiB at 200 MiB lands in layer 14 (was: NaN in layers 14–29)
        file.seek(200 << 20)
        file.write(os.urandom(2 << 20))
    assert path.stat().st_size == (pristine / WEIGHTS).stat().st_size
    assert not needs_conversion("smollm2", cache)  # the cheap check cannot see it; the load does
    assert_healed(load_model("smollm2", cache), cache)
    assert len(conversions) == 1


def test_the_cli_heals_a_garbage_cache_and_prints_finite_statistics(cache, conversions, monkeypatch, capsys):
    monkeypatch.setenv("ATTNVIZ_CACHE_DIR", str(cache.cache_dir))
    replace_weights(cache, b"\0" * 100)  # was: exit 1 with a SafetensorError traceback
    assert cli.main(["heads", "--model", "smollm2", "--text", TEXT]) == 0
    out, err = capsys.readouterr()
    table = pd.read_csv(pd.io.common.StringIO(out))
    assert len(table) == 270
    assert not table.isna().any().any()
    assert "Traceback" not in err
    assert len(conversions) == 1


def test_when_the_rebuild_fails_too_one_sentence_without_a_path_is_raised(cache, monkeypatch):
    def no_space(spec, gguf, folder: Path) -> None:
        raise OSError(28, "No space left on device", str(folder / WEIGHTS))

    monkeypatch.setattr(loading, "_dequantise", no_space)
    replace_weights(cache, b"\0" * 1000)
    with pytest.raises(UserFacingError) as raised:
        load_model("smollm2", cache)
    message = str(raised.value)
    assert "smollm2" in message and "ATTNVIZ_CACHE_DIR" in message
    assert str(cache.cache_dir) not in message and "/" not in message and "\n" not in message
    # The damaged folder was moved aside and no half-written staging folder is left behind.
    assert list(cache.cache_dir.iterdir()) == []


def test_a_failed_first_conversion_is_one_sentence_too(tmp_path, monkeypatch):
    def broken(spec, gguf, folder: Path) -> None:
        raise RuntimeError(f"unexpected tensor in {gguf}")

    monkeypatch.setattr(loading, "_dequantise", broken)
    settings = Settings(cache_dir=tmp_path / "cache")
    with pytest.raises(UserFacingError, match="smollm2") as raised:
        load_model("smollm2", settings)
    assert "/" not in str(raised.value)
    assert list(settings.cache_dir.iterdir()) == []


def test_two_loads_converting_at_once_both_succeed_and_leave_one_folder(tmp_path, monkeypatch, pristine):
    both_converting = threading.Barrier(2, timeout=60)

    def copy_together(spec, gguf, folder: Path) -> None:
        both_converting.wait()  # each thread has its own staging folder before either renames
        for file in pristine.iterdir():
            if file.name != loading.MANIFEST:
                link_or_copy(file, folder / file.name)

    monkeypatch.setattr(loading, "_dequantise", copy_together)
    settings = Settings(cache_dir=tmp_path / "cache")
    results: list[object] = [None, None]

    def load(index: int) -> None:
        try:
            results[index] = load_model("smollm2", settings)
        except Exception as error:  # reported below with the other thread's result
            results[index] = error

    threads = [threading.Thread(target=load, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(isinstance(result, loading.LoadedModel) for result in results), results
    assert all(result.notes == () for result in results)
    assert [entry.name for entry in settings.cache_dir.iterdir()] == [pristine.name]
    assert not needs_conversion("smollm2", settings)
    assert load_model("smollm2", settings).notes == ()


def test_other_versions_and_abandoned_staging_are_removed_and_nothing_else(cache, conversions):
    current = weights_file(cache).parent
    other_version = cache.cache_dir / "smollm2-98362432-1700000000000000000-tf4.57.1"
    other_version.mkdir()
    (other_version / WEIGHTS).write_bytes(b"old")
    abandoned = cache.cache_dir / f".{other_version.name}-k2j4h1"  # a conversion killed long ago
    abandoned.mkdir()
    hours_ago = time.time() - 3 * 3600
    os.utime(abandoned, (hours_ago, hours_ago))
    in_progress = cache.cache_dir / f".{current.name}-x9y8z7"  # another process converting now
    in_progress.mkdir()
    unrelated = [
        cache.cache_dir / "smollm2-notes.txt",
        cache.cache_dir / "minilm-extra",
        cache.cache_dir / "x",
    ]
    unrelated[0].write_text("mine")
    unrelated[1].mkdir()
    unrelated[2].mkdir()

    loaded = load_model("smollm2", cache)

    assert loaded.notes == () and conversions == []
    assert current.is_dir() and not other_version.exists() and not abandoned.exists()
    assert in_progress.exists() and all(path.exists() for path in unrelated)
