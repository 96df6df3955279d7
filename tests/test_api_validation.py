"""The Python API and the CLI refuse malformed arguments with one clear error each.

Before, ``window=float("nan")`` masked every row, ``window=2.5`` was labelled 2.5 but acted as 3,
``causal="no"`` turned causal *on*, and ``layers=[0.5]``, ``max_length=2.5``, ``None`` or a
non-string text raised a bare KeyError, TypeError or AttributeError from deep inside.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from tests_support import ROOT

from attention_viz.capture import capture, effect_of
from attention_viz.cli import build_parser
from attention_viz.errors import UserFacingError
from attention_viz.policy import MaskPolicy

BAD_POLICY_ARGUMENTS = [
    # (keyword arguments, exception, what the message must say)
    ({"window": float("nan")}, TypeError, r"window .* whole number \(an int\), got nan \(float\)"),
    ({"window": 2.5}, TypeError, r"window .* whole number \(an int\), got 2\.5 \(float\)"),
    ({"window": 3.0}, TypeError, r"window .* got 3\.0 \(float\)"),
    ({"window": True}, TypeError, r"window .* got True \(bool\)"),
    ({"window": "3"}, TypeError, r"window .* got '3' \(str\)"),
    ({"window": 0}, ValueError, r"window .* at least 1 token, got 0"),
    ({"max_length": 2.5}, TypeError, r"max_length .* whole number \(an int\), got 2\.5 \(float\)"),
    ({"max_length": float("inf")}, TypeError, r"max_length .* got inf \(float\)"),
    ({"max_length": -3}, ValueError, r"max_length .* at least 1 token, got -3"),
    ({"causal": "no"}, TypeError, r"causal must be True or False, got 'no' \(str\)"),
    ({"causal": 1}, TypeError, r"causal must be True or False, got 1 \(int\)"),
    ({"causal": np.bool_(True)}, TypeError, r"causal must be True or False"),
    ({"padding_mask": "off"}, TypeError, r"padding_mask must be True or False, got 'off' \(str\)"),
    ({"padding_mask": None}, TypeError, r"padding_mask must be True or False, got None \(NoneType\)"),
    ({"padding_side": 1}, TypeError, r"padding_side must be 'left' or 'right', got 1 \(int\)"),
    ({"padding_side": "middle"}, ValueError, r"padding_side must be 'left' or 'right', got 'middle'"),
]


def _ids(cases):
    return [f"{next(iter(keywords))}={next(iter(keywords.values()))!r}" for keywords, *_ in cases]


@pytest.mark.parametrize(
    ("keywords", "error", "message"), BAD_POLICY_ARGUMENTS, ids=_ids(BAD_POLICY_ARGUMENTS)
)
def test_a_mask_policy_refuses_a_malformed_field(keywords, error, message):
    with pytest.raises(error, match=message):
        MaskPolicy(**keywords)


@pytest.mark.parametrize(
    ("keywords", "error", "message"), BAD_POLICY_ARGUMENTS, ids=_ids(BAD_POLICY_ARGUMENTS)
)
def test_capture_refuses_a_malformed_mask_argument_before_running_the_model(
    smollm2, keywords, error, message
):
    # The mask settings reach capture as one MaskPolicy, which refuses a malformed field when it
    # is made (test above). capture validates the policy it is given again: a field forced past
    # the frozen dataclass is refused too. Value mistakes are something a person can fix (a
    # UserFacingError, which is a ValueError); type mistakes are a programmer's, so a plain TypeError.
    policy = MaskPolicy()
    for name, value in keywords.items():
        object.__setattr__(policy, name, value)
    with pytest.raises(UserFacingError if error is ValueError else TypeError, match=message):
        capture(smollm2, "The cat sat.", layers=[0], effect=False, policy=policy)


def test_a_nan_or_fractional_window_no_longer_changes_the_mask_silently():
    # The reproduction: nan masked every row, 2.5 acted as 3 under the label "window 2.5".
    for window in (float("nan"), 2.5):
        with pytest.raises(TypeError):
            MaskPolicy(window=window).build(torch.ones(1, 5))


def test_a_truthy_string_never_turns_the_causal_mask_on():
    with pytest.raises(TypeError, match="causal"):
        MaskPolicy(causal="no")


def test_numpy_integers_are_whole_numbers_and_stored_as_plain_ints():
    policy = MaskPolicy(window=np.int64(3), max_length=np.int32(8))
    assert policy == MaskPolicy(window=3, max_length=8)
    assert type(policy.window) is int and type(policy.max_length) is int
    assert hash(policy) == hash(MaskPolicy(window=3, max_length=8))


def test_a_numpy_layer_index_captures_like_an_int(smollm2):
    result = capture(smollm2, "The cat sat.", layers=np.array([2, 0]), effect=False)
    assert sorted(result.layers) == [0, 2]


BAD_CAPTURE_ARGUMENTS = [
    ({"layers": [0.5]}, TypeError, r"layers\[0\] must be a whole number \(an int\), got 0\.5 \(float\)"),
    ({"layers": [0, True]}, TypeError, r"layers\[1\] must be a whole number \(an int\), got True \(bool\)"),
    (
        {"layers": 3},
        TypeError,
        r"layers must be a list of zero-based layer indices such as \[0, 5\].*got 3 \(int\)",
    ),
    ({"layers": "0,5"}, TypeError, r"layers must be a list .*got '0,5' \(str\)"),
    ({"layers": [30]}, UserFacingError, r"Layer 30 does not exist: smollm2 has layers 0–29"),
    ({"layers": []}, UserFacingError, r"Name at least one layer"),
    ({"effect": "yes"}, TypeError, r"effect must be True or False, got 'yes' \(str\)"),
]


@pytest.mark.parametrize(
    ("keywords", "error", "message"), BAD_CAPTURE_ARGUMENTS, ids=_ids(BAD_CAPTURE_ARGUMENTS)
)
def test_capture_refuses_malformed_layers_and_flags(smollm2, keywords, error, message):
    arguments = {"layers": [0], "effect": False, **keywords}
    with pytest.raises(error, match=message):
        capture(smollm2, "The cat sat.", **arguments)


BAD_TEXTS = [
    (None, TypeError, r"texts must be a string or a list of strings, got None \(NoneType\)"),
    (42, TypeError, r"texts must be a string or a list of strings, got 42 \(int\)"),
    (b"bytes", TypeError, r"texts must be a string or a list of strings, got b'bytes' \(bytes\)"),
    ({"a text"}, TypeError, r"texts must be a string or a list of strings"),
    ([None], TypeError, r"texts\[0\] must be a string, got None \(NoneType\)"),
    (["fine", 3], TypeError, r"texts\[1\] must be a string, got 3 \(int\)"),
    ([], UserFacingError, r"The text is empty"),
    (["fine", "  "], UserFacingError, r"The text is empty"),
]


@pytest.mark.parametrize(("texts", "error", "message"), BAD_TEXTS, ids=[repr(case[0]) for case in BAD_TEXTS])
def test_capture_and_effect_refuse_texts_that_are_not_strings(smollm2, texts, error, message):
    with pytest.raises(error, match=message):
        capture(smollm2, texts, layers=[0], effect=False)
    with pytest.raises(error, match=message):
        effect_of(smollm2, texts, MaskPolicy())


def test_a_tuple_of_texts_is_a_batch(smollm2):
    assert len(capture(smollm2, ("The cat sat.", "A dog."), layers=[0], effect=False).tokens) == 2


def test_effect_of_refuses_a_policy_that_is_not_a_mask_policy(smollm2):
    with pytest.raises(TypeError, match=r"policy must be a MaskPolicy, got dict"):
        effect_of(smollm2, ["The cat sat."], {"causal": True})


def test_a_long_bad_value_is_shortened_in_the_message():
    with pytest.raises(TypeError) as caught:
        MaskPolicy(padding_side=["word"] * 10_000)
    assert len(str(caught.value)) < 200


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "attention_viz", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ),
    )


def test_the_cli_refuses_an_empty_layer_entry_in_one_line():
    done = run_cli("heads", "--text", "hi", "--layers", "1,,2")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "--layers" in lines[0] and "none missing" in lines[0] and "'1,,2'" in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("layers", ["1,,2", "0,", ",3", " , 4"])
def test_the_cli_parser_refuses_every_empty_layer_entry(layers, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["heads", "--text", "hi", "--layers", layers])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "none missing" in lines[0] and repr(layers) in lines[0]


def test_the_cli_parser_still_takes_spaced_layers():
    assert build_parser().parse_args(["heads", "--text", "hi", "--layers", "0, 5"]).layers == [0, 5]
