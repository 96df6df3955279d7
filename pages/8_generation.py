"""Generation: greedy decoding one token at a time, the KV cache, and why decoders are causal."""

from __future__ import annotations

import streamlit as st

from attention_viz.figures import stage_range
from attention_viz.generation import MAX_NEW_TOKENS, MAX_PROMPT_TOKENS, NEEDS_DECODER, STALE_TOLERANCE
from attention_viz.generation_figures import cache_figure, candidates_figure, stale_figure, step_heatmap
from attention_viz.loading import BUNDLED, DEFAULT_MODEL
from attention_viz.scales import SCALES
from ui import cache
from ui.chrome import display_settings, literal, model_or_stop, run_or_stop
from ui.controls import model_picker, move_row, scale_picker, set_value
from ui.routing import ensure_app_navigation
from ui.state import Param, clamp_index, publish, restore, show_notes
from ui.viewport import column_widths

PAGE = "generation"
DEFAULT_PROMPT = "The capital of France is"
DEFAULT_NEW_TOKENS = 12
PARAMS = [
    Param("gen_model", "model", DEFAULT_MODEL, "choice", choices=tuple(BUNDLED)),
    Param("gen_text", "text", DEFAULT_PROMPT),
    Param("gen_new", "new", DEFAULT_NEW_TOKENS, "int", low=1, high=MAX_NEW_TOKENS),
    Param("gen_layer", "layer", 0, "int", low=0, high=1000),
    Param("gen_head", "head", 0, "int", low=0, high=1000),
    Param("gen_causal", "causal", True, "bool"),
    Param("gen_scale", "scale", "fixed", "choice", choices=SCALES),
    # None: not started (the prompt alone); 0: the prefill; s: the s-th new token fed back.
    Param("gen_step", "step", None, "int", low=0, high=MAX_NEW_TOKENS - 1),
]

# Every visible string of this page, in one place. Placeholders are filled with str.format.
TEXT = {
    "title": "Generation, one token at a time",
    "intro": (
        "A decoder writes one token at a time. transformers' own generate runs the prompt once (the "
        "prefill: every prompt token becomes a query row), then feeds each new token back alone: it "
        "is the only new query, and its key and value join the KV cache, so nothing earlier is ever "
        "computed again. Greedy decoding: each step takes the most probable next token."
    ),
    "prompt": "Prompt (the model continues it)",
    "prompt_help": "At most {most} tokens. The model continues the text as it stands; there is no chat template.",
    "empty": "Type the start of a sentence for the model to continue.",
    "prompt_tokens": "The prompt is {count} token(s) long.",
    "too_long": "The prompt has {count} tokens; generation here takes at most {most}. Shorten the prompt.",
    "new_tokens": "New tokens (at most)",
    "new_tokens_help": "Greedy generation stops here, or earlier at the model's end-of-sequence token.",
    "layer": "Layer",
    "head": "Head",
    "start": "▶ Start",
    "start_help": "Run generate with its KV cache and show step 0: the prefill.",
    "not_started": "Press Start: the model reads the prompt (step 0, the prefill), then you step through the new tokens one at a time.",
    "back": "◀ Back",
    "step": "Step ▶",
    "end": "To the end ⏭",
    "reset": "■ Reset",
    "reset_help": "Stop stepping and go back to the prompt alone.",
    "running": "Generating with the KV cache, then two full forwards to compare with…",
    "step_label": "Step",
    "prefill": "{step} (prefill)",
    "of_steps": "{step} of {last}",
    "rows_label": "Query rows",
    "cache_label": "KV cache",
    "cache_tokens": "{tokens} tokens",
    "cache_size_label": "KV cache size",
    "cache_size": "{kilobytes:,.1f} KB",
    "text_so_far": "**Text so far:** {text}",
    "next_token": "**Token this step chose:** {token}",
    "eos": "The model chose its end-of-sequence token: generation stopped after {count} new token(s).",
    "causal_toggle": "Causal mask in the full forward",
    "causal_help": (
        "On: the full forward over the final sequence uses the causal mask the model was trained with. "
        "Off: every token of the full forward sees every other one, the future included."
    ),
    "cached_title": "Cached: generate, row by row",
    "full_title_causal": "One full forward · causal",
    "full_title_bidirectional": "One full forward · no causal mask",
    "heatmap_caption": (
        "Layer {layer}, head {head} (it reads KV head {kv}: {group} query heads share each cached key "
        "and value). Rows are queries, columns keys; “…” marks tokens not generated "
        "yet at this step. The orange outline is what this step added: the prompt's rows at the "
        "prefill, then one row per new token. The last token chosen is never fed back, so it has no row."
    ),
    "same": (
        "max |Δ| over the {rows} rows so far: {delta:.1e}. The cached rows are the full forward's "
        "rows, to float32 rounding: a causal row depends only on the tokens up to it, so once "
        "written it never changes, and neither do the keys and values in the cache."
    ),
    "stale": (
        "{count} of {rows} cached rows would be stale: rows {which} differ from the full forward "
        "without the causal mask by up to {delta:.2f}. Without it every earlier token would see "
        "each new one, so a model would have to recompute every earlier row (and, from layer 1 on, "
        "every cached key and value) at every step. That is why decoders are causal."
    ),
    "stale_title": "Each cached row against the full forward",
    "stale_caption": (
        "Red: the cached row differs by more than {tolerance:.0e} (stale). Dark: equal to float32 "
        "rounding. The axis is logarithmic; a difference of exactly 0 sits at the bottom."
    ),
    "candidates_title": "Most probable next tokens after step {step}",
    "cache_title": "KV cache after each step",
    "cache_caption": (
        "Each token costs {layers} layers × 2 (K and V) × {kv} KV heads × {dim} dimensions × {value} "
        "bytes = {per_token:,} bytes. With one KV head per query head ({heads}, no grouped-query "
        "attention) it would be {without:,} bytes."
    ),
}

ensure_app_navigation()
notes = restore(PAGE, PARAMS)
style, presentation = display_settings()
st.title(TEXT["title"])
st.caption(TEXT["intro"])
show_notes(notes)

top = st.columns([1, 2])
with top[0]:
    model_name = model_picker("gen")
with top[1]:
    st.text_area(
        TEXT["prompt"], key="gen_text", height=68, help=TEXT["prompt_help"].format(most=MAX_PROMPT_TOKENS)
    )
loaded = model_or_stop(model_name)
prompt = st.session_state["gen_text"]
if not loaded.decoder:
    st.warning(NEEDS_DECODER.format(name=model_name))
    publish(PAGE, PARAMS)
    st.stop()
if not prompt.strip():
    st.warning(TEXT["empty"])
    publish(PAGE, PARAMS)
    st.stop()

clamp_index("gen_layer", loaded.num_layers)
clamp_index("gen_head", loaded.num_heads)
picks = st.columns([2, 3, 1])
picks[0].slider(TEXT["new_tokens"], 1, MAX_NEW_TOKENS, key="gen_new", help=TEXT["new_tokens_help"])
picks[1].slider(TEXT["layer"], 0, loaded.num_layers - 1, key="gen_layer")
picks[2].selectbox(TEXT["head"], range(loaded.num_heads), key="gen_head")
layer, head, new_tokens = (
    st.session_state["gen_layer"],
    st.session_state["gen_head"],
    st.session_state["gen_new"],
)

step = st.session_state["gen_step"]
if step is None:
    count = run_or_stop(lambda: cache.token_count(model_name, (prompt,)), "Tokenising…")
    if count > MAX_PROMPT_TOKENS:
        st.warning(TEXT["too_long"].format(count=count, most=MAX_PROMPT_TOKENS))
    st.button(
        TEXT["start"],
        key="gen_start",
        type="primary",
        on_click=set_value,
        args=("gen_step", 0),
        help=TEXT["start_help"],
        disabled=count > MAX_PROMPT_TOKENS,
    )
    st.info(TEXT["not_started"])
    st.caption(TEXT["prompt_tokens"].format(count=count))
    publish(PAGE, PARAMS)
    st.stop()

generation = run_or_stop(lambda: cache.generation(model_name, prompt, layer, new_tokens), TEXT["running"])
last = generation.num_steps - 1
if step > last:  # fewer tokens than asked (end of sequence), or a link to a later step
    st.session_state["gen_step"] = step = last
publish(PAGE, PARAMS)

buttons = st.columns(
    [1.3, 1.3, 1.6, 1.3, 3] if presentation else [1, 1, 1.2, 1, 5], vertical_alignment="center"
)
buttons[0].button(
    TEXT["back"], key="gen_back", on_click=move_row, args=("gen_step", -1, last), disabled=step == 0
)
buttons[1].button(
    TEXT["step"],
    key="gen_next",
    type="primary",
    on_click=move_row,
    args=("gen_step", 1, last),
    disabled=step >= last,
)
buttons[2].button(
    TEXT["end"], key="gen_end", on_click=set_value, args=("gen_step", last), disabled=step >= last
)
buttons[3].button(
    TEXT["reset"], key="gen_reset", on_click=set_value, args=("gen_step", None), help=TEXT["reset_help"]
)

current = generation.steps[step]
rows = generation.rows_at(step)
numbers = st.columns(4)
numbers[0].metric(
    TEXT["step_label"],
    TEXT["prefill"].format(step=step) if step == 0 else TEXT["of_steps"].format(step=step, last=last),
)
numbers[1].metric(TEXT["rows_label"], rows)
numbers[2].metric(TEXT["cache_label"], TEXT["cache_tokens"].format(tokens=current.cache_tokens))
numbers[3].metric(TEXT["cache_size_label"], TEXT["cache_size"].format(kilobytes=current.cache_bytes / 1024))
st.markdown(TEXT["text_so_far"].format(text=literal(current.text.replace("\n", "↵"))))
st.markdown(TEXT["next_token"].format(token=literal(current.token)))
if generation.stopped_at_eos and step == last:
    st.info(TEXT["eos"].format(count=generation.num_steps))

switches = st.columns([1, 1] if presentation else [1, 2])  # the toggle's long label needs room on a projector
switches[0].toggle(TEXT["causal_toggle"], key="gen_causal", help=TEXT["causal_help"])
with switches[1]:
    scale = scale_picker("gen_scale", "weights")
causal = bool(st.session_state["gen_causal"])
value_range = stage_range("weights", generation.cached[head], style.palette, scale)
newest = (0, rows - 1) if step == 0 else (rows - 1, rows - 1)

widths = column_widths([1, 1])
left, right = st.columns([1, 1])
with left:
    st.plotly_chart(
        step_heatmap(
            generation.cached[head],
            generation.cached_mask,
            generation.tokens,
            rows,
            value_range,
            TEXT["cached_title"],
            style,
            width_px=widths[0],
            newest=newest,
        ),
        key="gen_cached_chart",
        width="content",
    )
with right:
    st.plotly_chart(
        step_heatmap(
            generation.full(causal)[head],
            generation.full_mask(causal),
            generation.tokens,
            rows,
            value_range,
            TEXT["full_title_causal"] if causal else TEXT["full_title_bidirectional"],
            style,
            width_px=widths[1],
            newest=newest,
        ),
        key="gen_full_chart",
        width="content",
    )
st.caption(
    TEXT["heatmap_caption"].format(
        layer=layer,
        head=head,
        kv=int(generation.kv_head[head]),
        group=generation.num_heads // generation.kv_heads,
    )
)

stale = generation.stale_rows(head, step, causal)
delta = generation.max_delta(head, step, causal)
if stale:
    which = ", ".join(map(str, stale[:12])) + (", …" if len(stale) > 12 else "")
    st.error(TEXT["stale"].format(count=len(stale), rows=rows, which=which, delta=delta))
else:
    st.success(TEXT["same"].format(rows=rows, delta=delta))

ratios = [3, 2]
widths = column_widths(ratios)
left, right = st.columns(ratios)
with left:
    st.plotly_chart(
        stale_figure(
            generation.row_delta(causal)[head, :rows],
            generation.tokens,
            STALE_TOLERANCE,
            TEXT["stale_title"],
            style,
            width_px=widths[0],
        ),
        key="gen_stale_chart",
        width="content",
    )
    st.caption(TEXT["stale_caption"].format(tolerance=STALE_TOLERANCE))
with right:
    st.plotly_chart(
        candidates_figure(
            current.candidates, TEXT["candidates_title"].format(step=step), style, width_px=widths[1]
        ),
        key="gen_candidates_chart",
        width="content",
    )
    st.plotly_chart(
        cache_figure(generation.steps, step, TEXT["cache_title"], style, width_px=widths[1]),
        key="gen_cache_chart",
        width="content",
    )
    st.caption(
        TEXT["cache_caption"].format(
            layers=generation.cache_layers,
            kv=generation.kv_heads,
            dim=generation.head_dim,
            value=generation.value_bytes,
            per_token=generation.bytes_per_token,
            heads=generation.num_heads,
            without=generation.bytes_per_token * generation.num_heads // generation.kv_heads,
        )
    )
