"""The command line: outputs in every format, statistics, and one-line errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from tests_support import ROOT


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "attention_viz", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_heads_prints_270_rows_for_smollm2():
    done = run_cli("heads", "--model", "smollm2", "--text", "The cat sat on the mat because it was tired.")
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(pd.io.common.StringIO(done.stdout))
    assert len(table) == 270 == 30 * 9
    assert set(table.columns) >= {"layer", "head", "entropy", "distance", "sink", "previous", "padding"}
    assert table["padding"].eq(0).all()
    assert "Traceback" not in done.stderr


def test_minilm_padding_mass_is_zero_with_the_mask_and_not_without():
    texts = ["--text", "The quick brown fox jumps over the lazy dog.", "--text", "Hi"]
    masked = pd.read_csv(pd.io.common.StringIO(run_cli("heads", "--model", "minilm", *texts).stdout))
    leaky_run = run_cli("heads", "--model", "minilm", *texts, "--no-padding-mask")
    assert leaky_run.returncode == 0, leaky_run.stderr
    leaky = pd.read_csv(pd.io.common.StringIO(leaky_run.stdout))
    assert len(masked) == len(leaky) == 6 * 12
    assert (masked["padding"] == 0).all()
    assert (leaky["padding"] > 0).all()


@pytest.mark.parametrize("suffix", [".json", ".npz", ".csv"])
def test_capture_writes_every_format(tmp_path, suffix):
    out = tmp_path / f"capture{suffix}"
    done = run_cli(
        "capture",
        "--model",
        "smollm2",
        "--text",
        "the cat sat",
        "--text",
        "a dog",
        "--layers",
        "0,5",
        "--padding-side",
        "left",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    if suffix == ".json":
        document = json.loads(out.read_text())
        assert document["model"] == "smollm2"
        assert document["tokens"][1][0] == "[PAD]"
        weights = np.array(document["layers"]["5"]["weights"])
        assert weights.shape == (2, 9, 3, 3)
        np.testing.assert_allclose(weights[0].sum(-1), 1.0, atol=1e-5)
        assert set(document["layers"]) == {"0", "5"}
    elif suffix == ".npz":
        arrays = np.load(out)
        assert arrays["layer0_weights"].shape == (2, 9, 3, 3)
        assert arrays["mask"].shape == (2, 3, 3)
    else:
        table = pd.read_csv(out)
        assert len(table) == 2 * 2 * 9 * 3 * 3
        assert {"query_token", "key_token", "weight"} <= set(table.columns)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["heads", "--text", "   "], "empty"),
        (["heads", "--model", "gpt9", "--text", "hi"], "smollm2, minilm"),
        (["heads", "--text", "hi", "--layers", "30"], "layers 0–29"),
        (["heads", "--model", "../../etc", "--text", "hi"], "allowlist"),
        (["heads", "--model", "/etc", "--text", "hi"], "allowlist"),
        (["heads", "--model", "HuggingFaceTB/SmolLM2-360M", "--text", "hi"], "allowlist"),
        (["capture", "--text", "hi", "--layers", "0", "--out", "x.txt"], ".json"),
        # argparse's own mistakes are one line too.
        (["heads", "--text", "hi", "--layers", "abc"], "--layers"),
        (["heads"], "--text"),
        (["heads", "--text", "hi", "--padding-side", "up"], "--padding-side"),
        (["paint", "--text", "hi"], "paint"),
        (["heads", "--text", "hi", "--layers", ","], "at least one layer"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(args, message):
    done = run_cli(*args)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_fifty_thousand_characters_are_truncated_with_a_notice():
    text = "word " * 10_000
    assert len(text) == 50_000
    done = run_cli("heads", "--model", "minilm", "--text", text, "--layers", "0")
    assert done.returncode == 0, done.stderr
    assert "notice:" in done.stderr and "cut" in done.stderr
    assert len(done.stdout.strip().splitlines()) == 1 + 12  # header + one row per head of layer 0


def test_strange_scripts_and_characters_run_in_one_batch():
    texts = [
        "注意力机制很有趣。",
        "الانتباه مهم جدا",  # right-to-left
        "cats 🐱🐈 purr 👍🏽",
        "zero\u200bwidth\u200djoiner",
        "cafe\u0301 with a combining accent",
        "control\x07 and \x1b[31m escape",
        "<script>alert(1)</script>",
    ]
    arguments = [argument for text in texts for argument in ("--text", text)]
    # A host may batch more than the default 4 texts.
    done = run_cli("heads", "--model", "minilm", *arguments, "--layers", "0", env={"ATTNVIZ_MAX_TEXTS": "7"})
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(io.StringIO(done.stdout))
    assert len(table) == 12
    assert table.drop(columns=["layer", "head", "kv_head"]).notna().all().all()


def test_a_bad_host_setting_is_one_line():
    done = run_cli("heads", "--model", "minilm", "--text", "hi", env={"ATTNVIZ_MAX_TOKENS": "abc"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: ATTNVIZ_MAX_TOKENS must be a whole number, got 'abc'."
    ]


def test_max_length_cut_names_its_cause():
    done = run_cli("heads", "--model", "minilm", "--text", "one two three four five six", "--max-length", "3")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines() == [
        "notice: 5 tokens of 'one two three four five six' were cut to fit --max-length 3."
    ]
