"""Allowlisted models in every model page's picker, read from their config before any weights,
and every kind of bad allowlisted path: one clear line in the picker and on the CLI (exit 2)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from apptest_helpers import ROOT
from streamlit.testing.v1 import AppTest
from tiny_models import GEMMA2_SOFTCAPPED, TINY, build, copy_tokenizer

from attention_viz.errors import UserFacingError
from attention_viz.i18n import language
from attention_viz.models import available_models, model_info

# Every page that shows a real model, and the key of its model picker.
MODEL_PAGES = {
    "2_model_explorer.py": "ex_model",
    "3_padding_lab.py": "pl_model",
    "4_head_gallery.py": "hg_model",
    "5_compare.py": "cmp_model",
    "6_packing_check.py": "pk_model",
    "7_mask_check.py": "mc_model",
    "8_generation.py": "gen_model",
}


def _pickle_only(folder: Path) -> Path:
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
    )
    folder.mkdir()
    config.save_pretrained(folder)
    torch.save(transformers.BertModel(config).state_dict(), folder / "pytorch_model.bin")
    return folder


def _remote_code(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "my_secret_arch",
                "architectures": ["MySecretForCausalLM"],
                "auto_map": {"AutoConfig": "modeling_secret.SecretConfig"},
            }
        )
    )
    (folder / "modeling_secret.py").write_text("raise SystemExit('remote code ran')\n")
    (folder / "model.safetensors").write_bytes(b"")
    return folder


def _not_a_model(folder: Path) -> Path:
    folder.mkdir()
    (folder / "notes.txt").write_text("lecture notes, not a model\n")
    return folder


def _own_attention(folder: Path) -> Path:
    """A GPT-J: its attention is its own code, not transformers' attention-function registry."""
    config = transformers.GPTJConfig(
        vocab_size=30522,
        n_embd=32,
        n_layer=2,
        n_head=4,
        rotary_dim=4,
        n_positions=64,
        pad_token_id=0,
        bos_token_id=101,
        eos_token_id=102,
    )
    folder.mkdir()
    torch.manual_seed(0)
    transformers.GPTJForCausalLM(config).save_pretrained(folder)
    copy_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("allowlist")
    return {
        "good": build(TINY["gemma3"], root / "tiny-gemma3"),
        "missing": root / "no-such-model",
        "not a model": _not_a_model(root / "slides"),
        "pickle only": _pickle_only(root / "pickled-bert"),
        "remote code": _remote_code(root / "remote-code"),
        "own attention": _own_attention(root / "tiny-gptj"),
        "softcapped": build(GEMMA2_SOFTCAPPED, root / "tiny-gemma2"),
    }


# What each bad entry's one line must say.
REASONS = {
    "missing": "does not exist",
    "not a model": "no config.json",
    "pickle only": "pickled weights",
    "remote code": "remote code",
    "own attention": "attention-function registry",
    "softcapped": "score capping",
}


@pytest.fixture
def allowlist(folders, monkeypatch) -> dict[str, Path]:
    monkeypatch.setenv("ATTNVIZ_ALLOWED_MODELS", ",".join(str(path) for path in folders.values()))
    return folders


def test_a_good_model_is_described_from_its_config_before_any_weights_load(allowlist, monkeypatch):
    def no_weights(*args, **kwargs):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", no_weights)
    info = model_info(str(allowlist["good"]))
    assert info.decoder and info.architecture == "Gemma3ForCausalLM"
    assert (info.num_layers, info.num_heads, info.num_kv_heads) == (3, 4, 2)
    assert info.layer_kinds == ("sliding_attention", "full_attention", "sliding_attention")
    assert info.sliding_window == 4
    assert info.describe() == (
        "Gemma3ForCausalLM · causal decoder · 3 layers · 4 heads (2 KV heads) · sliding window 4 in layers 0, 2"
    )
    assert available_models()[:2] == ("smollm2", "minilm")
    assert available_models()[2:] == tuple(str(path) for path in allowlist.values())


@pytest.mark.parametrize("kind", sorted(REASONS))
def test_each_bad_entry_gets_one_clear_sentence(allowlist, kind):
    with pytest.raises(UserFacingError) as raised:
        model_info(str(allowlist[kind]))
    message = str(raised.value)
    assert REASONS[kind] in message
    assert "\n" not in message and len(message) < 300
    assert "Traceback" not in message


def test_remote_code_never_runs(allowlist):
    """The folder's own Python file would exit the process; it is never imported."""
    from attention_viz.loading import load_model

    with pytest.raises(UserFacingError, match="remote code"):
        load_model(str(allowlist["remote code"]))


@pytest.mark.parametrize("kind", sorted(REASONS))
def test_the_cli_prints_one_line_and_exits_2(allowlist, kind):
    done = subprocess.run(
        [sys.executable, "-m", "attention_viz", "heads", "--model", str(allowlist[kind]), "--text", "a b c"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ATTNVIZ_ALLOWED_MODELS": os.environ["ATTNVIZ_ALLOWED_MODELS"]},
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert REASONS[kind] in lines[0]
    assert done.stdout == ""


def _page(page: str) -> AppTest:
    app = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=120)
    with language("en"):
        app.run()
    assert not app.exception, [error.value for error in app.exception]
    return app


# What each bad entry's line in the picker says, in a few words after the folder's name.
SHORT = {
    "missing": "does not exist",
    "not a model": "not a model folder (no config.json)",
    "pickle only": "pickled weights only, never loaded",
    "remote code": "needs remote code, never run",
    "own attention": "attention outside transformers' registry",
    "softcapped": "score capping or sink logits",
}


@pytest.mark.parametrize("page", sorted(MODEL_PAGES))
def test_every_model_page_offers_every_allowlisted_model(allowlist, page):
    app = _page(page)
    picker = app.selectbox(key=MODEL_PAGES[page])
    assert picker.value == "smollm2"  # the bundled default still opens first
    assert list(picker.options)[2:] == [
        f"{path.name} · {model_info(str(path)).describe()}"
        if kind == "good"
        else f"⚠ {path.name} · {SHORT[kind]}"
        for kind, path in allowlist.items()
    ]
    # The help names every entry that cannot open with its whole sentence.
    help_text = _unescape(picker.help)
    for kind in allowlist:
        assert kind == "good" or REASONS[kind] in help_text
    assert "tiny-gemma3" not in help_text


def _unescape(markdown: str) -> str:
    """Markdown-escaped text as it reads on screen."""
    return re.sub(r"\\(.)", r"\1", markdown)


@pytest.mark.parametrize("kind", sorted(REASONS))
def test_picking_a_bad_entry_shows_one_error_and_the_page_still_works(allowlist, kind):
    app = _page("2_model_explorer.py")
    app.selectbox(key="ex_model").set_value(str(allowlist[kind]))
    with language("en"):
        app.run()
    assert not app.exception, [error.value for error in app.exception]
    errors = [_unescape(element.value) for element in app.error]
    assert len(errors) == 1 and REASONS[kind] in errors[0]
    assert str(allowlist[kind]) in errors[0]
    # Picking a bundled model again brings the page back.
    app.selectbox(key="ex_model").set_value("minilm")
    with language("en"):
        app.run()
    assert not app.exception and not app.error
    assert app.get("plotly_chart")


def test_a_link_to_an_allowlisted_model_opens_it(allowlist):
    app = AppTest.from_file(str(ROOT / "pages" / "2_model_explorer.py"), default_timeout=120)
    app.query_params["model"] = str(allowlist["good"])
    with language("en"):
        app.run()
    assert not app.exception and not app.error, [element.value for element in app.error]
    assert app.selectbox(key="ex_model").value == str(allowlist["good"])
    assert app.get("plotly_chart")
