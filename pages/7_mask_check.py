"""Mask check: the policy's mask against transformers' own, at FlexAttention block granularity, and as code."""

from __future__ import annotations

from functools import partial

import streamlit as st

from attention_viz.block_figures import block_figure
from attention_viz.figures import SINGLE_HOVER_CELL_LIMIT, parity_figure
from attention_viz.i18n import _
from attention_viz.mask_check import DRAWING_MAX_TOKENS
from ui import cache
from ui.chrome import display_settings, literal, run_or_stop
from ui.controls import model_and_texts, model_params, numbered, page_masks
from ui.routing import ensure_app_navigation
from ui.state import Param, clamp_index, publish, restore, show_notes
from ui.viewport import column_widths

PAGE = "mask_check"
DEFAULT_TEXT = "The cat sat on the mat because it was tired.\nParis is the capital of France."
BLOCK_SIZES = (16, 32, 64, 128, 256)
PARAMS = [
    *model_params("mc", DEFAULT_TEXT),
    Param("mc_block", "block", 128, "choice", choices=BLOCK_SIZES),
    Param("mc_item", "item", 0, "int", low=0, high=100),
]

ensure_app_navigation()
notes = restore(PAGE, PARAMS)
style, presentation = display_settings()
st.title(_("Mask check"))
st.caption(
    _(
        "The mask your settings build, set beside the one transformers' own mask functions build for the "
        "same tokens, cell for cell; then the same mask as FlexAttention sees it, in blocks, and as code."
    )
)
show_notes(notes)

model_name, loaded, texts = model_and_texts("mc")
if not texts:
    st.warning(_("Type a sentence to check its mask."))
    st.stop()
policy = page_masks("mc", model_name, loaded, texts, presentation)
rows = 1 if policy.pack else len(texts)
clamp_index("mc_item", rows)
picks = st.columns([2, 2, 3])
picks[0].selectbox(
    _("Text shown"),
    range(rows),
    format_func=partial(numbered, [_("packed row")] if policy.pack else [text[:40] for text in texts]),
    key="mc_item",
    disabled=rows == 1,
)
picks[1].selectbox(
    _("Block size (tokens)"),
    BLOCK_SIZES,
    key="mc_block",
    help=_("FlexAttention's default is 128. A block is skipped when every cell in it is masked."),
)
check = run_or_stop(
    lambda: cache.masks(model_name, texts, policy, st.session_state["mc_block"], st.session_state["mc_item"]),
    _("Building the masks…"),
)
publish(PAGE, PARAMS)

parity, item = check.parity, check.item
st.subheader(_("Our mask against transformers' own · {masks}").format(masks=check.policy.describe()))
built_with = ", ".join(literal(source) for source in parity.sources)
if parity.equal:
    st.success(
        _("Equal, cell for cell: {cells:,} cells over {rows} row(s).").format(
            cells=parity.ours[:, 0].numel(), rows=parity.ours.shape[0]
        )
    )
else:
    st.error(
        _(
            "{cells:,} cells differ: red where only our mask lets a query attend, blue where "
            "only transformers' does."
        ).format(cells=parity.cells_differ)
    )
st.caption(
    _("transformers built its mask with {sources}.").format(sources=built_with)
    + (
        _(" Written here, as transformers has no function for them: {parts}.").format(
            parts="; ".join(parity.written_here)
        )
        if parity.written_here
        else ""
    )
    + (
        _(
            " {cells:,} cells in padding query rows differ by convention (ours leaves a "
            "pad's own row empty; transformers masks padding keys only) and are not counted."
        ).format(cells=parity.cells_by_convention)
        if parity.cells_by_convention
        else ""
    )
)
tokens = check.tokens
widths = column_widths([1, 1])
left, right = st.columns([1, 1])
with left:
    if len(tokens) ** 2 <= SINGLE_HOVER_CELL_LIMIT:
        st.plotly_chart(
            parity_figure(
                parity.ours[item, 0],
                parity.theirs[item, 0],
                parity.by_convention[item, 0],
                tokens,
                title=_("Packed row") if check.policy.pack else _("Text {item}").format(item=item),
                style=style,
                width_px=widths[0],
            ),
            key="mc_parity_chart",
            width="content",
        )
        st.caption(
            _(
                "Dark: both may attend. Light: both mask. Red: only ours may attend. Blue: only "
                "transformers' may attend. Grey: a padding row that differs by convention."
            )
        )
    else:
        st.info(
            _("{count:,} tokens: too many cells to draw one by one; the counts above cover them all.").format(
                count=len(tokens)
            )
        )
with right:
    view = check.blocks
    st.plotly_chart(
        block_figure(
            view,
            _("FlexAttention blocks of {size} tokens").format(size=view.block_size),
            widths[1],
            style=style,
        ),
        key="mc_block_chart",
        width="content",
    )
    counts = st.columns(4)
    counts[0].metric(_("Full blocks"), view.full_blocks)
    counts[1].metric(_("Partial blocks"), view.partial_blocks)
    counts[2].metric(_("Empty blocks"), view.empty_blocks)
    counts[3].metric(_("Skipped"), f"{view.sparsity:.1f}%")
    st.caption(
        _(
            "Built with torch's own create_block_mask on CPU from the policy's mask_mod. FlexAttention "
            "computes full blocks without reading the mask, applies it inside partial blocks, and skips "
            "empty ones."
        )
    )

code, drawing = st.columns([3, 2])
with code:
    st.markdown(_("**The policy as a FlexAttention `mask_mod`** (copy it; nothing here runs it)"))
    st.code(check.snippet, language="python")
with drawing:
    cut = (
        _(" (first {count} tokens)").format(count=DRAWING_MAX_TOKENS)
        if len(tokens) > DRAWING_MAX_TOKENS
        else ""
    )
    st.markdown(_("**Text {item} as ■ may attend / ⬚ masked**{cut}, for slides").format(item=item, cut=cut))
    st.code(check.drawing, language=None)
