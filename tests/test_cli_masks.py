"""The command line's mask flags (--prefix, --sinks, --chunk, --pack, --no-document-mask,
--no-position-reset): the policy they build, what the JSON records, and one-line refusals."""

from __future__ import annotations

import json

import pytest
import torch
from test_cli import run_cli

from attention_viz.cli import build_parser, policy_from_args
from attention_viz.errors import UserFacingError
from attention_viz.policy import MaskPolicy, document_positions

TEXTS = ("--text", "The cat sat on the mat.", "--text", "A dog barked.")


def parsed_policy(*flags: str) -> MaskPolicy:
    return policy_from_args(build_parser().parse_args(["heads", *TEXTS, *flags]))


def test_every_flag_reaches_the_policy():
    policy = parsed_policy(
        "--window", "4", "--sinks", "2", "--prefix", "3", "--chunk", "8", "--pack", "--no-document-mask",
        "--no-position-reset",
    )  # fmt: skip
    assert policy == MaskPolicy(
        window=4, sinks=2, prefix=3, chunk=8, pack=True, document_mask=False, reset_positions=False
    )
    assert parsed_policy() == MaskPolicy(), "no flag: the model's own masks"


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--sinks", "2"), "add --window"),
        (("--no-document-mask",), "add --pack"),
        (("--no-position-reset",), "add --pack"),
        (("--no-causal", "--prefix", "2"), "causal"),
    ],
)
def test_bad_combinations_are_refused_before_any_model_loads(flags, says):
    with pytest.raises(UserFacingError, match=says):
        parsed_policy(*flags)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (("--chunk", "0"), "at least 1"),
        (("--sinks", "2"), "--window"),
        (("--prefix", "40"), "longer than a text"),
        (("--model", "minilm", "--prefix", "2"), "add --causal"),
        (("--pack", "--no-position-reset", "--no-document-mask", "--chunk", "x"), "whole number"),
    ],
)
def test_cli_prints_one_line_and_exits_2(flags, says):
    done = run_cli("heads", *TEXTS, *flags)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_packed_capture_json_records_the_policy_documents_and_restarted_positions(tmp_path):
    out = tmp_path / "packed.json"
    done = run_cli(
        "capture", *TEXTS, "--pack", "--window", "3", "--sinks", "1", "--layers", "0", "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(out.read_text())
    assert MaskPolicy(**document["policy"]) == MaskPolicy(
        causal=True, window=3, sinks=1, pack=True, document_mask=True, reset_positions=True
    )
    documents = torch.tensor(document["documents"])
    assert documents.shape[0] == 1 and set(documents[0].tolist()) == {0, 1}, "one row, two texts"
    positions = torch.tensor(document["position_ids"])
    attention_mask = torch.tensor(document["attention_mask"])
    assert torch.equal(positions, document_positions(attention_mask, documents)), "positions restart per text"
    mask = torch.tensor(document["mask"])  # (1, T, T)
    assert torch.equal(mask, MaskPolicy(**document["policy"]).build(attention_mask, documents)[:, 0])
    weights = torch.tensor(document["layers"]["0"]["weights"])  # (1, H, T, T)
    assert float(weights[~mask[:, None].expand_as(weights)].abs().max()) == 0.0, "masked cells get no weight"
