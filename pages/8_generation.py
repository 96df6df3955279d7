"""Generation: greedy decoding one token at a time, the KV cache, and why decoders are causal."""

from __future__ import annotations

import streamlit as st

from attention_viz.figures import stage_range
from attention_viz.generation import MAX_NEW_TOKENS, MAX_PROMPT_TOKENS, NEEDS_DECODER, STALE_TOLERANCE
from attention_viz.generation_figures import cache_figure, candidates_figure, stale_figure, step_heatmap
from attention_viz.i18n import N_, _
from attention_viz.scales import SCALES
from ui import cache
from ui.chrome import display_settings, literal, model_or_stop, run_or_stop
from ui.controls import model_param, model_picker, move_row, scale_picker, set_value
from ui.routing import ensure_app_navigation
from ui.state import Param, clamp_index, publish, restore, show_notes
from ui.viewport import column_widths

PAGE = "generation"
DEFAULT_PROMPT = "The capital of France is"
DEFAULT_NEW_TOKENS = 12
PARAMS = [
    model_param("gen_model"),
    Param("gen_text", "text", DEFAULT_PROMPT),
    Param("gen_new", "new", DEFAULT_NEW_TOKENS, "int", low=1, high=MAX_NEW_TOKENS),
    Param("gen_layer", "layer", 0, "int", low=0, high=1000),
    Param("gen_head", "head", 0, "int", low=0, high=1000),
    Param("gen_causal", "causal", True, "bool"),
    Param("gen_scale", "scale", "fixed", "choice", choices=SCALES),
    # None: not started (the prompt alone); 0: the prefill; s: the s-th new token fed back.
    Param("gen_step", "step", None, "int", low=0, high=MAX_NEW_TOKENS - 1),
]

# Every visible string of this page, in one place: marked with N_, translated with _ where shown.
# Placeholders are filled with str.format after the lookup.
TEXT = {
    "title": N_("Generation, one token at a time"),
    "intro": N_(
        "A decoder writes one token at a time. transformers' own generate runs the prompt once (the "
        "prefill: every prompt token becomes a query row), then feeds each new token back alone: it "
        "is the only new query, and its key and value join the KV cache, so nothing earlier is ever "
        "computed again. Greedy decoding: each step takes the most probable next token."
    ),
    "prompt": N_("Prompt (the model continues it)"),
    "prompt_help": N_(
        "At most {most} tokens. The model continues the text as it stands; there is no chat template."
    ),
    "empty": N_("Type the start of a sentence for the model to continue."),
    "prompt_tokens": N_("The prompt is {count} token(s) long."),
    "too_long": N_(
        "The prompt has {count} tokens; generation here takes at most {most}. Shorten the prompt."
    ),
    "new_tokens": N_("New tokens (at most)"),
    "new_tokens_help": N_("Greedy generation stops here, or earlier at the model's end-of-sequence token."),
    "layer": N_("Layer"),
    "head": N_("Head"),
    "start": N_("▶ Start"),
    "start_help": N_("Run generate with its KV cache and show step 0: the prefill."),
    "not_started": N_(
        "Press Start: the model reads the prompt (step 0, the prefill), then you step through the new tokens one at a time."
    ),
    "back": N_("◀ Back"),
    "step": N_("Step ▶"),
    "end": N_("To the end ⏭"),
    "reset": N_("■ Reset"),
    "reset_help": N_("Stop stepping and go back to the prompt alone."),
    "running": N_("Generating with the KV cache, then two full forwards to compare with…"),
    "step_label": N_("Step"),
    "prefill": N_("{step} (prefill)"),
    "of_steps": N_("{step} of {last}"),
    "rows_label": N_("Query rows"),
    "cache_label": N_("KV cache"),
    "cache_tokens": N_("{tokens} tokens"),
    "cache_size_label": N_("KV cache size"),
    "cache_size": N_("{kilobytes:,.1f} KB"),
    "text_so_far": N_("**Text so far:** {text}"),
    "next_token": N_("**Token this step chose:** {token}"),
    "eos": N_("The model chose its end-of-sequence token: generation stopped after {count} new token(s)."),
    "causal_toggle": N_("Causal mask in the full forward"),
    "causal_help": N_(
        "On: the full forward over the final sequence uses the causal mask the model was trained with. "
        "Off: every token of the full forward sees every other one, the future included."
    ),
    "cached_title": N_("Cached: generate, row by row"),
    "full_title_causal": N_("One full forward · causal"),
    "full_title_bidirectional": N_("One full forward · no causal mask"),
    "heatmap_caption": N_(
        "Layer {layer}, head {head} (it reads KV head {kv}: {group} query heads share each cached key "
        "and value). Rows are queries, columns keys; “…” marks tokens not generated "
        "yet at this step. The orange outline is what this step added: the prompt's rows at the "
        "prefill, then one row per new token. The last token chosen is never fed back, so it has no row."
    ),
    "same": N_(
        "max |Δ| over the {rows} rows so far: {delta:.1e}. The cached rows are the full forward's "
        "rows, to float32 rounding: a causal row depends only on the tokens up to it, so once "
        "written it never changes, and neither do the keys and values in the cache."
    ),
    "stale": N_(
        "{count} of {rows} cached rows would be stale: rows {which} differ from the full forward "
        "without the causal mask by up to {delta:.2f}. Without it every earlier token would see "
        "each new one, so a model would have to recompute every earlier row (and, from layer 1 on, "
        "every cached key and value) at every step. That is why decoders are causal."
    ),
    "stale_title": N_("Each cached row against the full forward"),
    "stale_caption": N_(
        "Red: the cached row differs by more than {tolerance:.0e} (stale). Dark: equal to float32 "
        "rounding. The axis is logarithmic; a difference of exactly 0 sits at the bottom."
    ),
    "candidates_title": N_("Most probable next tokens after step {step}"),
    "cache_title": N_("KV cache after each step"),
    "cache_caption": N_(
        "Each token costs {layers} layers × 2 (K and V) × {kv} KV heads × {dim} dimensions × {value} "
        "bytes = {per_token:,} bytes. With one KV head per query head ({heads}, no grouped-query "
        "attention) it would be {without:,} bytes."
    ),
}

ensure_app_navigation()
notes = restore(PAGE, PARAMS)
text = {key: _(message) for key, message in TEXT.items()}  # in the run's language, set by restore
style, presentation = display_settings()
st.title(text["title"])
st.caption(text["intro"])
show_notes(notes)

top = st.columns([1, 2])
with top[0]:
    model_name = model_picker("gen")
with top[1]:
    st.text_area(
        text["prompt"],
        key="gen_text",
        height=68,
        help=text["prompt_help"].format(most=MAX_PROMPT_TOKENS),
    )
loaded = model_or_stop(model_name)
prompt = st.session_state["gen_text"]
if not loaded.decoder:
    st.warning(_(NEEDS_DECODER).format(name=model_name))
    publish(PAGE, PARAMS)
    st.stop()
if not prompt.strip():
    st.warning(text["empty"])
    publish(PAGE, PARAMS)
    st.stop()

clamp_index("gen_layer", loaded.num_layers)
clamp_index("gen_head", loaded.num_heads)
picks = st.columns([2, 3, 1])
picks[0].slider(text["new_tokens"], 1, MAX_NEW_TOKENS, key="gen_new", help=text["new_tokens_help"])
picks[1].slider(text["layer"], 0, loaded.num_layers - 1, key="gen_layer")
picks[2].selectbox(text["head"], range(loaded.num_heads), key="gen_head")
layer, head, new_tokens = (
    st.session_state["gen_layer"],
    st.session_state["gen_head"],
    st.session_state["gen_new"],
)

step = st.session_state["gen_step"]
if step is None:
    count = run_or_stop(lambda: cache.token_count(model_name, (prompt,)), _("Tokenising…"))
    if count > MAX_PROMPT_TOKENS:
        st.warning(text["too_long"].format(count=count, most=MAX_PROMPT_TOKENS))
    st.button(
        text["start"],
        key="gen_start",
        type="primary",
        on_click=set_value,
        args=("gen_step", 0),
        help=text["start_help"],
        disabled=count > MAX_PROMPT_TOKENS,
    )
    st.info(text["not_started"])
    st.caption(text["prompt_tokens"].format(count=count))
    publish(PAGE, PARAMS)
    st.stop()

generation = run_or_stop(lambda: cache.generation(model_name, prompt, layer, new_tokens), text["running"])
last = generation.num_steps - 1
if step > last:  # fewer tokens than asked (end of sequence), or a link to a later step
    st.session_state["gen_step"] = step = last
publish(PAGE, PARAMS)

buttons = st.columns(
    [1.3, 1.3, 1.6, 1.3, 3] if presentation else [1, 1, 1.2, 1, 5], vertical_alignment="center"
)
buttons[0].button(
    text["back"], key="gen_back", on_click=move_row, args=("gen_step", -1, last), disabled=step == 0
)
buttons[1].button(
    text["step"],
    key="gen_next",
    type="primary",
    on_click=move_row,
    args=("gen_step", 1, last),
    disabled=step >= last,
)
buttons[2].button(
    text["end"], key="gen_end", on_click=set_value, args=("gen_step", last), disabled=step >= last
)
buttons[3].button(
    text["reset"], key="gen_reset", on_click=set_value, args=("gen_step", None), help=text["reset_help"]
)

current = generation.steps[step]
rows = generation.rows_at(step)
numbers = st.columns(4)
numbers[0].metric(
    text["step_label"],
    text["prefill"].format(step=step) if step == 0 else text["of_steps"].format(step=step, last=last),
)
numbers[1].metric(text["rows_label"], rows)
numbers[2].metric(text["cache_label"], text["cache_tokens"].format(tokens=current.cache_tokens))
numbers[3].metric(text["cache_size_label"], text["cache_size"].format(kilobytes=current.cache_bytes / 1024))
st.markdown(text["text_so_far"].format(text=literal(current.text.replace("\n", "↵"))))
st.markdown(text["next_token"].format(token=literal(current.token)))
if generation.stopped_at_eos and step == last:
    st.info(text["eos"].format(count=generation.num_steps))

switches = st.columns([1, 1] if presentation else [1, 2])  # the toggle's long label needs room on a projector
switches[0].toggle(text["causal_toggle"], key="gen_causal", help=text["causal_help"])
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
            text["cached_title"],
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
            text["full_title_causal"] if causal else text["full_title_bidirectional"],
            style,
            width_px=widths[1],
            newest=newest,
        ),
        key="gen_full_chart",
        width="content",
    )
st.caption(
    text["heatmap_caption"].format(
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
    st.error(text["stale"].format(count=len(stale), rows=rows, which=which, delta=delta))
else:
    st.success(text["same"].format(rows=rows, delta=delta))

ratios = [3, 2]
widths = column_widths(ratios)
left, right = st.columns(ratios)
with left:
    st.plotly_chart(
        stale_figure(
            generation.row_delta(causal)[head, :rows],
            generation.tokens,
            STALE_TOLERANCE,
            text["stale_title"],
            style,
            width_px=widths[0],
        ),
        key="gen_stale_chart",
        width="content",
    )
    st.caption(text["stale_caption"].format(tolerance=STALE_TOLERANCE))
with right:
    st.plotly_chart(
        candidates_figure(
            current.candidates, text["candidates_title"].format(step=step), style, width_px=widths[1]
        ),
        key="gen_candidates_chart",
        width="content",
    )
    st.plotly_chart(
        cache_figure(generation.steps, step, text["cache_title"], style, width_px=widths[1]),
        key="gen_cache_chart",
        width="content",
    )
    st.caption(
        text["cache_caption"].format(
            layers=generation.cache_layers,
            kv=generation.kv_heads,
            dim=generation.head_dim,
            value=generation.value_bytes,
            per_token=generation.bytes_per_token,
            heads=generation.num_heads,
            without=generation.bytes_per_token * generation.num_heads // generation.kv_heads,
        )
    )
