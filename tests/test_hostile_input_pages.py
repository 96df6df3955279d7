"""What a class might throw at the Model explorer: too many lines, a pasted book, strange
scripts, tampered links. Each gets a clear note, the text stays in the box, nothing crashes."""

from __future__ import annotations

from apptest_helpers import axis_ticktext, chart
from streamlit.testing.v1 import AppTest
from tests_support import ROOT

PAGE = str(ROOT / "pages" / "2_model_explorer.py")
TIMEOUT = 240


def open_explorer(**query: str | list[str]) -> AppTest:
    app = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    app.query_params.update(query)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def infos(app: AppTest) -> list[str]:
    return [info.value for info in app.info]


def test_more_lines_than_a_batch_holds_keeps_the_text_and_says_so():
    app = open_explorer()
    lines = "\n".join(f"Sentence number {n} is here." for n in range(6))
    app.text_area(key="ex_text").set_value(lines).run()
    assert not app.exception
    assert app.text_area(key="ex_text").value == lines, "the box keeps every line"
    assert any("6 lines were given; the first 4 are used" in note for note in infos(app))
    assert app.selectbox(key="ex_item").options == ["0", "1", "2", "3"]


def test_a_pasted_book_is_cut_to_the_model_limit_and_drawn_as_images():
    app = open_explorer()
    book = "word " * 10_000  # 50,000 characters
    app.text_area(key="ex_text").set_value(book).run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.text_area(key="ex_text").value == book, "the text stays in the box"
    assert app.session_state["ex_length"] == 2048
    assert any("were cut by the sequence length" in note for note in infos(app))
    # 2048 tokens: the grid is downsampled images and says so; one head stays full size;
    # a query-row picker gives exact values.
    grid = chart(app, "ex_grid_chart")
    kinds = [trace.type for trace in grid.data]
    assert kinds.count("image") == 9 and "heatmap" not in kinds, kinds  # plus the colour bar's trace
    assert any("downsampled 4×" in caption.value for caption in app.caption)
    assert [box for box in app.number_input if box.key == "ex_row"], "a query-row picker for large N"
    row = chart(app, "ex_row_chart")
    assert len(row.data[0].customdata) == 2048, "the row chart has one bar per key"


def test_strange_scripts_show_as_tokens():
    lines = "注意力机制很有趣\nالانتباه مهم جدا 🐱\nzero\u200bwidth cafe\u0301\nbell\x07 <b>bold</b>"
    app = open_explorer()
    app.text_area(key="ex_text").set_value(lines).run()
    assert not app.exception, [e.value for e in app.exception]
    app.selectbox(key="ex_item").set_value(3).run()
    labels = axis_ticktext(chart(app, "ex_head_chart"))
    assert labels and any("&lt;" in label for label in labels), "HTML in a token is escaped, not rendered"
    assert not any("<b>" in label for label in labels)


def test_tampered_links_fall_back_with_a_note():
    app = open_explorer(model="../../etc", layer=["2", "5"], head="nine")
    assert app.session_state["ex_model"] == "smollm2"
    assert app.session_state["ex_layer"] == 2, "the first of a repeated parameter is used"
    assert app.session_state["ex_head"] == 0
    notes = " ".join(infos(app))
    assert "“model”" in notes and "“layer” was given 2 times" in notes and "“head”" in notes


def test_a_length_over_the_models_limit_is_replaced_with_a_note():
    app = open_explorer(length="2049")
    assert not app.exception
    assert any("more than this model's limit of 2,048 tokens" in info.value for info in app.info)
    assert app.slider(key="ex_length").value == 11


def test_playground_takes_at_most_eight_lines_and_says_so():
    app = AppTest.from_file(str(ROOT / "pages" / "1_playground.py"), default_timeout=60)
    app.query_params["text"] = "\n".join(["a"] * 1000)
    app.run()
    assert not app.exception
    assert any("1,000 lines were given; the first 8 are used" in info.value for info in app.info)
    assert len(app.selectbox(key="pg_item").options) == 8
    assert app.text_area(key="pg_text").value.count("\n") == 999, "the box keeps every line"


def test_a_weights_csv_too_large_for_the_server_points_to_npz_and_the_cli():
    app = open_explorer(text=" ".join(["word"] * 400))
    assert not app.exception
    app.session_state["ex_export"] = True  # Export opened: its buttons and notes are drawn
    app.run()
    assert not app.exception
    assert any("download the NPZ instead" in caption.value for caption in app.caption)
    # One layer's rows (the file holds the shown layer): 9 heads × 400² is over the limit.
    assert app.get("download_button")[0].proto.disabled
