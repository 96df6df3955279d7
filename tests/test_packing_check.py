"""The packing check: its core measured against independent references, and its page, as a user drives it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from apptest_helpers import chart, decode_array, run_page

from attention_viz.errors import UserFacingError
from attention_viz.packing import (
    AGREEMENT_TOLERANCE,
    VARIANTS,
    cross_document_mass,
    drift_table,
    packing_check,
    summary_table,
)

TEXTS = [
    "The cat sat on the mat because it was tired.",
    "Paris is the capital of France.",
    "Two plus two is four.",
]
CORRECT, NEITHER = VARIANTS[0][0], VARIANTS[-1][0]


def slow_cross_mass(weights: torch.Tensor, documents: list[int]) -> list[float]:
    """Per head, the mean over queries of the weight on keys of other documents, one cell at a time."""
    heads, length, _ = weights.shape
    result = []
    for head in range(heads):
        total = 0.0
        for query in range(length):
            total += sum(
                float(weights[head, query, key])
                for key in range(length)
                if documents[key] != documents[query]
            )
        result.append(total / length)
    return result


def test_cross_document_mass_matches_a_slow_loop():
    generator = torch.Generator().manual_seed(0)
    weights = torch.rand(3, 7, 7, generator=generator).softmax(-1)  # (H, T, T)
    documents = [0, 0, 0, 1, 1, 2, 2]
    measured = cross_document_mass(weights, torch.tensor(documents))
    assert torch.allclose(measured, torch.tensor(slow_cross_mass(weights, documents)), atol=1e-6)


@pytest.fixture(scope="module")
def checks(smollm2, minilm):
    return {model.name: packing_check(model, TEXTS) for model in (smollm2, minilm)}


@pytest.mark.parametrize("name", ["smollm2", "minilm"])
def test_kept_apart_each_packed_text_equals_the_text_alone(checks, name, request):
    check = checks[name]
    correct = [drift for drift in check.drift if drift.variant == CORRECT]
    assert [drift.document for drift in correct] == [0, 1, 2]
    for drift in correct:
        assert drift.max_abs_delta <= AGREEMENT_TOLERANCE, drift
        if check.decoder:
            assert drift.top1_flips == 0
        else:
            assert drift.cosine == pytest.approx(1.0, abs=1e-5)
    assert float(check.cross_mass[CORRECT].abs().max()) == 0.0, "the document mask lets nothing cross"
    model = request.getfixturevalue(name)
    assert check.cross_mass[CORRECT].shape == (model.num_layers, model.num_heads)


@pytest.mark.parametrize("name", ["smollm2", "minilm"])
def test_without_the_document_mask_later_texts_drift_and_attention_crosses(checks, name):
    check = checks[name]
    for label, document_mask, _ in VARIANTS:
        drifts = {drift.document: drift for drift in check.drift if drift.variant == label}
        if document_mask:
            assert float(check.cross_mass[label].max()) == 0.0
            continue
        assert float(check.cross_mass[label].max()) > 0.1, label
        for document in (1, 2):
            assert drifts[document].max_abs_delta > 1e-2, (label, drifts[document])
            assert not drifts[document].agrees
        if check.decoder:
            # A causal decoder's first text never sees the texts after it.
            assert drifts[0].max_abs_delta <= AGREEMENT_TOLERANCE
            assert sum(drifts[document].top1_flips for document in (1, 2)) > 0
        else:
            assert drifts[1].cosine < 0.99


def test_positions_restart_or_run_on(checks):
    check = checks["minilm"]
    documents = check.documents.tolist()
    restarted = check.position_ids[CORRECT].tolist()
    run_on = check.position_ids[NEITHER].tolist()
    assert run_on == list(range(len(documents)))
    for index, document in enumerate(documents):
        first = documents.index(document)
        assert restarted[index] == index - first
    # BERT has absolute positions: the restart alone matters even with the document mask on.
    mask_only = {drift.document: drift for drift in check.drift if drift.variant == "document mask only"}
    assert mask_only[0].agrees and not mask_only[1].agrees


def test_tables_name_every_variant_and_document(checks):
    check = checks["smollm2"]
    summary = summary_table(check)
    assert list(summary["packing"]) == [label for label, _, _ in VARIANTS]
    assert list(summary["texts as alone"])[0] == "3 of 3"
    drift = drift_table(check)
    assert len(drift) == len(VARIANTS) * len(TEXTS)
    assert {"KL(alone ‖ packed)", "top-1 flips", "same as alone"} <= set(drift)


def test_refuses_one_text_five_texts_and_rows_over_the_limit(minilm):
    with pytest.raises(UserFacingError, match="2 to 4"):
        packing_check(minilm, ["only one"])
    with pytest.raises(UserFacingError, match="2 to 4"):
        packing_check(minilm, ["a", "b", "c", "d", "e"])
    with pytest.raises(UserFacingError, match="longer than"):
        packing_check(minilm, ["word " * 300, "word " * 300])


def test_page_shows_the_check_and_switches_the_variant():
    app = run_page("6_packing_check.py", timeout=240)
    assert not app.error
    tables = [frame.value for frame in app.dataframe]
    assert len(tables) == 3, "summary, positions and per-text tables"
    summary, positions, per_text = tables
    assert list(summary["texts as alone"])[0] == "3 of 3"
    assert list(positions["position"]) == list(range(len(positions))), "neither: positions run on"
    assert len(per_text) == len(VARIANTS) * len(TEXTS)
    assert app.session_state["pk_variant"] == NEITHER
    leaking = chart(app, "pk_mass_chart")
    assert np.nanmax(decode_array(leaking.data[0].z)) > 0.1
    app.radio(key="pk_variant").set_value(CORRECT).run()
    assert not app.exception
    positions = app.dataframe[1].value
    assert list(positions["position"])[: list(positions["text"]).count(0)] == list(
        range(list(positions["text"]).count(0))
    )
    assert 0 in list(positions["position"])[list(positions["text"]).count(0) :], "restarted at text 1"
    kept_apart = chart(app, "pk_mass_chart")
    assert np.nanmax(decode_array(kept_apart.data[0].z)) == 0.0
    assert "document mask + position reset" in kept_apart.layout.title.text


def test_page_asks_for_two_texts():
    app = run_page("6_packing_check.py", timeout=240)
    app.text_area(key="pk_text").set_value("Just one text").run()
    assert not app.exception
    assert any("at least two" in warning.value for warning in app.warning)
