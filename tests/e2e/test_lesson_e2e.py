"""The README's 5-minute lesson for teachers, walked in a browser exactly as written.

Each ``step_*`` function is one numbered step of "For teachers: a 5-minute lesson on masked
self-attention": it drives the controls the step names, by their labels on screen, and asserts
what the step tells the class to look at, from the figure data the browser holds (see
``read_plot``). The walk starts from a fresh session at the app's default URL and runs twice:
as on a laptop, and with **Presentation mode** switched on in the sidebar first. If a step fails
here, the README is wrong (or the page changed): fix one or the other, never only the test.
"""

from __future__ import annotations

import pytest

from .conftest import (
    APP_TIMEOUT_MS,
    Plot,
    click_toggle,
    read_plot,
    switch,
    upper_triangle,
    wait_for_app,
    wait_for_plot_change,
)

HEADS = "pg_heads_chart"  # the Playground's heatmaps, one panel per head; head 0 comes first
MASK = "pg_mask_chart"  # Mask M: 1 = may attend (M = 0), 0 = masked (M = −∞)
FOCUSED = "ex_head_chart"  # the Model explorer's focused head ("Head 0")
PLAYGROUND_PLOTS = 2  # heads, mask
EXPLORER_PLOTS = 3  # head grid, focused head, mean over heads
# A cold model cache converts the bundled GGUF first (about 20 s); a loaded CI machine is slower.
FIRST_LOAD_MS = 180_000
RUN_MS = 120_000
SUM_TOLERANCE = 1e-4

# What a fresh Playground shows: the default text's two sentences, as the toy tokenizer splits them.
FIRST = ["the", "cat", "sat", "on", "the", "mat"]
SECOND_PADDED_RIGHT = ["the", "dog", "barked", "[PAD]", "[PAD]", "[PAD]"]
SECOND_PADDED_LEFT = ["[PAD]", "[PAD]", "[PAD]", "the", "dog", "barked"]
# The Model explorer's default text has 11 SmolLM2 tokens; switching its causal mask off flips
# the top-1 next-token prediction at 7 of them (the README says so).
EXPLORER_TOKENS = ["The", "cat", "sat", "on", "the", "mat", "because", "it", "was", "tired", "."]
FLIPS_WITHOUT_CAUSAL = 7

# The "Σ 1.00" labels right of the first panel (head 0), top row first.
_ROW_SUMS_JS = """
(key) => {
    const el = document.querySelector(`.st-key-${key} .js-plotly-plot`);
    if (el === null || !el.layout) return null;
    return (el.layout.annotations || [])
        .filter((a) => a.xref === "x domain" && String(a.text).startsWith("Σ"))
        .map((a) => String(a.text));
}
"""


# --- reading the pictures --------------------------------------------------------------------------


def first_panel_cells(plot: Plot, name: str) -> set[tuple[int, int]]:
    """The (query, key) cells of head 0's trace called ``name`` ("masked", "padding row"...)."""
    cells: set[tuple[int, int]] = set()
    for index, (trace_name, z) in enumerate(zip(plot.names, plot.z, strict=True)):
        if index and trace_name == "values":
            break  # the next head's panel
        if trace_name == name:
            cells |= {(r, c) for r, row in enumerate(z) for c, value in enumerate(row) if value is not None}
    return cells


def first_panel_names(plot: Plot) -> list[str]:
    """The kinds of cell head 0's panel draws, in trace order."""
    names = [plot.names[0]]
    for name in plot.names[1:]:
        if name == "values":
            break
        names.append(name)
    return names


def row_sum_labels(page) -> list[str]:
    labels = page.evaluate(_ROW_SUMS_JS, HEADS)
    assert labels is not None, "the heads chart is missing"
    return labels


def upper_cells(size: int) -> set[tuple[int, int]]:
    """Every cell above the diagonal: a key after its query, the future."""
    return {(q, k) for q in range(size) for k in range(q + 1, size)}


def pad_positions(tokens: list[str]) -> list[int]:
    return [i for i, token in enumerate(tokens) if token == "[PAD]"]


def real_positions(tokens: list[str]) -> list[int]:
    return [i for i, token in enumerate(tokens) if token != "[PAD]"]


def assert_rows_sum_to_one(matrix: list[list[float | None]], rows: list[int]) -> None:
    for row in rows:
        assert sum(v for v in matrix[row] if v is not None) == pytest.approx(1.0, abs=SUM_TOLERANCE), (
            f"row {row} of the weights does not sum to 1: {matrix[row]}"
        )


# --- driving the page like a teacher ---------------------------------------------------------------


def choose_stage(page, label: str, before: Plot) -> Plot:
    """Pick ``label`` in the **Stage** radio and return the redrawn heads chart."""
    page.get_by_role("radiogroup", name="Stage").get_by_text(label, exact=True).click()
    wait_for_app(page, plots=PLAYGROUND_PLOTS)
    return wait_for_plot_change(page, HEADS, before)


def toggle(
    page,
    label: str,
    before: Plot,
    key: str = HEADS,
    plots: int = PLAYGROUND_PLOTS,
    timeout_ms: int = APP_TIMEOUT_MS,
) -> Plot:
    """Click the toggle ``label`` and return chart ``key`` once it has changed."""
    was = switch(page, label).is_checked()
    click_toggle(page, label)
    wait_for_app(page, plots=plots, timeout_ms=timeout_ms)
    after = wait_for_plot_change(page, key, before, timeout_ms=timeout_ms)
    wait_for_app(page, plots=plots, timeout_ms=timeout_ms)
    assert switch(page, label).is_checked() is not was, f"{label!r} did not switch"
    return after


def metric(page, label: str) -> str:
    """The value an ``st.metric`` labelled ``label`` shows, after scrolling it into view."""
    box = page.get_by_test_id("stMetric").filter(has_text=label)
    assert box.count() == 1, f"no single metric {label!r} on the page"
    box.scroll_into_view_if_needed()
    assert box.is_visible(), f"the metric {label!r} is not visible"
    return box.get_by_test_id("stMetricValue").inner_text().strip()


# --- the lesson, one function per step ---------------------------------------------------------------


def step_1_the_formula_before_the_mask(page) -> Plot:
    """Stage *scores (QKᵀ/√d)*: every cell has a score, nothing is grey; Mask M shows what M will
    hide; in head 0 each *the* scores the other *the* above cat, sat, on and mat."""
    assert page.locator(".katex").first.is_visible(), "the formula is not shown"
    weights = read_plot(page, HEADS)
    assert weights.ticktext == FIRST, "a fresh Playground shows the first default sentence"
    scores = choose_stage(page, "scores (QKᵀ/√d)", weights)
    assert scores.ticktext == FIRST, f"picking a stage changed the tokens to {scores.ticktext}"

    assert first_panel_names(scores) == ["values"], "scores are drawn before the mask: nothing may be grey"
    cells = scores.matrix
    assert all(value is not None for row in cells for value in row), "every token scores every token"
    mask = read_plot(page, MASK).z[0]
    assert all(value == 0 for value in upper_triangle(mask)), "Mask M: the future is grey (−∞)"
    assert all(mask[q][k] == 1 for q in range(len(FIRST)) for k in range(q + 1)), (
        "Mask M: the past is dark (0)"
    )

    first_the, second_the = 0, 4
    for query, partner in ((first_the, second_the), (second_the, first_the)):
        others = [k for k in range(len(FIRST)) if k not in (first_the, second_the)]  # cat, sat, on, mat
        assert all(cells[query][partner] > cells[query][k] for k in others), (
            f"head 0: “the” at {query} does not score the other “the” above cat, sat, on and mat: {cells[query]}"
        )
    return scores


def step_2_the_causal_mask(page, scores: Plot) -> Plot:
    """*masked scores (+M)*: the upper triangle turns grey, where Mask M is grey. *weights (after
    softmax)*: each row sums to 1 (Σ 1.00). **Causal mask** off: the triangle fills in, the rows
    still sum to 1. On again: the same picture as before."""
    size = len(FIRST)
    masked = choose_stage(page, "masked scores (+M)", scores)
    assert first_panel_cells(masked, "masked") == upper_cells(size), (
        "masked scores: grey must be the upper triangle"
    )

    weights = choose_stage(page, "weights (after softmax)", masked)
    assert first_panel_cells(weights, "masked") == upper_cells(size)
    assert all(value == 0 for value in upper_triangle(weights.matrix))
    assert_rows_sum_to_one(weights.matrix, list(range(size)))
    assert row_sum_labels(page) == ["Σ 1.00"] * size, "each row should be labelled Σ 1.00"

    assert switch(page, "Causal mask").is_checked(), "the lesson starts with the causal mask on"
    free = toggle(page, "Causal mask", weights)
    assert first_panel_cells(free, "masked") == set(), "causal off: nothing should stay grey"
    assert any(value > 0 for value in upper_triangle(free.matrix)), "causal off: no token sees the future"
    assert any(value != 0 for value in upper_triangle(read_plot(page, MASK).z[0])), (
        "Mask M still hides the future"
    )
    assert_rows_sum_to_one(free.matrix, list(range(size)))
    assert row_sum_labels(page) == ["Σ 1.00"] * size

    again = toggle(page, "Causal mask", free)
    assert again.matrix == weights.matrix, "switching the causal mask on again did not restore the weights"
    return again


def step_3_step_through_the_rows(page, weights: Plot) -> Plot:
    """**Step through the rows**, **Next row ▶** twice: one more row per press, and the narration
    “Query 2 “sat” may attend to 0: the, 1: cat, 2: sat”. Switched off: the whole picture again."""
    shown = toggle(page, "Step through the rows", weights)
    next_row = page.get_by_role("button", name="Next row ▶")
    for row in (1, 2):
        next_row.click()
        wait_for_app(page, plots=PLAYGROUND_PLOTS)
        shown = wait_for_plot_change(page, HEADS, shown)
        revealed = [r for r, values in enumerate(shown.matrix) if any(v is not None for v in values)]
        assert revealed == list(range(row + 1)), f"after {row} presses rows {revealed} show"
        mask_rows = read_plot(page, MASK).z[0]
        assert sum(any(v is not None for v in values) for values in mask_rows) == row + 1
    narration = page.get_by_text("Query 2 “sat” may attend to")
    assert narration.is_visible()
    assert narration.inner_text().endswith("may attend to 0: the, 1: cat, 2: sat")

    whole = toggle(page, "Step through the rows", shown)
    assert whole.matrix == weights.matrix, "switching stepping off should show every row again"
    return whole


def step_4_padding(page, weights: Plot) -> None:
    """**Sentence shown** *1: the dog barked*: three [PAD], their rows empty. **Padding mask** off:
    only the [PAD] rows change (nothing leaks: the pads are in every real word's future).
    **Padding side** *left*: real words put weight on the [PAD] columns. **Padding mask** on:
    every [PAD] column is exactly 0 for the real words."""
    page.get_by_test_id("stSelectbox").filter(has_text="Sentence shown").click()
    page.get_by_role("option", name="1: the dog barked").click()
    wait_for_app(page, plots=PLAYGROUND_PLOTS)
    padded = wait_for_plot_change(page, HEADS, weights)
    assert padded.ticktext == SECOND_PADDED_RIGHT
    pads, real = pad_positions(SECOND_PADDED_RIGHT), real_positions(SECOND_PADDED_RIGHT)
    size = len(SECOND_PADDED_RIGHT)
    empty_rows = {(q, k) for q in pads for k in range(size)}
    assert first_panel_cells(padded, "padding row") == empty_rows, (
        "with the padding mask the [PAD] rows are empty"
    )
    assert all(padded.matrix[q][k] == 0 for q in real for k in pads)

    assert switch(page, "Padding mask").is_checked()
    forgotten = toggle(page, "Padding mask", padded)
    # Nothing leaks: the real words' rows are exactly what they were.
    assert [forgotten.matrix[q] for q in real] == [padded.matrix[q] for q in real], (
        "right padding under a causal mask: switching the padding mask off changed a real word's row"
    )
    assert all(forgotten.matrix[q] != padded.matrix[q] for q in pads), "the [PAD] rows should change"
    assert first_panel_cells(forgotten, "padding row") == set()
    assert first_panel_cells(forgotten, "padding query"), (
        "the [PAD] rows now attend: drawn as padding queries"
    )
    mask = read_plot(page, MASK).z[0]
    assert all(mask[q][k] == 0 for q in real for k in pads), (
        "Mask M: causal still hides the pads from real words"
    )

    page.get_by_role("radiogroup", name="Padding side").get_by_text("left", exact=True).click()
    wait_for_app(page, plots=PLAYGROUND_PLOTS)
    left = wait_for_plot_change(page, HEADS, forgotten)
    assert left.ticktext == SECOND_PADDED_LEFT
    pads, real = pad_positions(SECOND_PADDED_LEFT), real_positions(SECOND_PADDED_LEFT)
    leaks = {q: sum(left.matrix[q][k] for k in pads) for q in real}
    assert any(weight > 0 for weight in leaks.values()), f"left padding, no padding mask: no leak {leaks}"
    assert all(weight > 0 for weight in leaks.values()), f"every real word should leak onto [PAD]: {leaks}"

    fixed = toggle(page, "Padding mask", left)
    assert fixed.ticktext == SECOND_PADDED_LEFT
    assert all(fixed.matrix[q][k] == 0 for q in real for k in pads), "the [PAD] columns should be exactly 0"
    assert {(q, k) for q in real for k in pads} <= first_panel_cells(fixed, "masked"), (
        "[PAD] columns are grey"
    )
    assert_rows_sum_to_one(fixed.matrix, real)
    mask = read_plot(page, MASK).z[0]
    assert all(mask[q][k] == 0 for q in real for k in pads)


def step_5_a_real_model(page, presentation: bool) -> None:
    """**Model explorer** from the sidebar; **Causal mask** off: SmolLM2 runs again, head 0 sees
    the future, **Top-1 flips in this text** goes from 0 to 7 and the KL from 0 to about 1."""
    page.get_by_role("link", name="Model explorer").click()
    wait_for_app(page, plots=EXPLORER_PLOTS, timeout_ms=FIRST_LOAD_MS)
    assert page.get_by_role("heading", name="Model explorer").is_visible()
    assert switch(page, "Presentation mode").is_checked() is presentation, (
        "presentation mode did not carry over"
    )
    assert page.get_by_role("heading", name="Head 0", exact=True).is_visible()
    causal = read_plot(page, FOCUSED)
    assert causal.ticktext == EXPLORER_TOKENS, "the explorer's default text is not the README's"
    assert all(value == 0 for value in upper_triangle(causal.matrix))
    assert page.get_by_role("heading", name="What the masks change in the output").count() == 1
    assert metric(page, "Top-1 flips in this text") == "0"
    assert float(metric(page, "KL(default ‖ this) at this position")) == 0

    free = toggle(page, "Causal mask", causal, key=FOCUSED, plots=EXPLORER_PLOTS, timeout_ms=RUN_MS)
    assert free.ticktext == causal.ticktext
    assert any(value > 0 for value in upper_triangle(free.matrix)), (
        "causal off: head 0 still ignores the future"
    )
    assert first_panel_cells(free, "masked") == set(), "causal off: part of head 0 is still grey"
    assert_rows_sum_to_one(free.matrix, list(range(len(EXPLORER_TOKENS))))  # re-run, not un-hidden
    page.get_by_role("heading", name="What the masks change in the output").scroll_into_view_if_needed()
    assert int(metric(page, "Top-1 flips in this text")) == FLIPS_WITHOUT_CAUSAL
    kl = float(metric(page, "KL(default ‖ this) at this position"))
    assert 0.5 < kl < 2.0, f"the README says the KL is about 1; the page shows {kl}"


@pytest.mark.parametrize("presentation", [False, True], ids=["laptop", "presentation_mode"])
def test_the_readme_lesson_for_teachers_works_step_by_step(streamlit_server, browser_page, presentation):
    page = browser_page.page
    page.goto(streamlit_server)
    wait_for_app(page, plots=PLAYGROUND_PLOTS)
    assert page.get_by_role("heading", name="Playground: masked self-attention").is_visible()
    # The lesson pads "the dog barked" to six tokens: the slider must hold what the picture shows,
    # or the first click sends the slider's value back and cuts both sentences.
    length = page.get_by_role("slider", name="Sequence length").get_attribute("aria-valuetext")
    assert length == str(len(FIRST)), (
        f"a fresh Playground draws {len(FIRST)} tokens but its Sequence length slider shows {length}"
    )
    if presentation:
        click_toggle(page, "Presentation mode")
        wait_for_app(page, plots=PLAYGROUND_PLOTS)
        assert switch(page, "Presentation mode").is_checked()

    scores = step_1_the_formula_before_the_mask(page)
    weights = step_2_the_causal_mask(page, scores)
    weights = step_3_step_through_the_rows(page, weights)
    step_4_padding(page, weights)
    step_5_a_real_model(page, presentation)
    assert browser_page.problems() == []
