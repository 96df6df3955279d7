"""The mask controls every model page shares, with the same labels as the Playground."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import streamlit as st

from attention_viz.figures import escape_markdown
from attention_viz.i18n import N_, _
from attention_viz.loading import DEFAULT_MODEL, LoadedModel
from attention_viz.models import BUNDLED, available_models
from attention_viz.policy import MaskPolicy
from attention_viz.scales import SCALES, scale_label
from attention_viz.settings import load_settings
from ui import cache
from ui.chrome import model_or_stop, run_or_stop
from ui.state import Param

MAX_WINDOW = 512
# Prefix, sinks and chunk widths a control accepts (0 = off); longer ones are refused by the link reader.
MAX_PART = 8192
PADDING_SIDES = ("right", "left")
# The padding side as the radio names it (the URL keeps "right" and "left").
SIDE_LABELS = {"right": N_("right"), "left": N_("left")}


def mask_params(key: str, url: str = "", causal_default: bool | None = None) -> list[Param]:
    """URL-backed state for the masks of one policy: a page's (``url=""``) or one side of Compare
    (``url="a_"``). Widths are 0 when off, as the number inputs show them."""
    return [
        Param(f"{key}_causal", f"{url}causal", causal_default, "bool"),
        Param(f"{key}_padding", f"{url}padding", True, "bool"),
        Param(f"{key}_window", f"{url}window", 0, "int", low=0, high=MAX_WINDOW),
        Param(f"{key}_prefix_lm", f"{url}prefix", 0, "int", low=0, high=MAX_PART),
        Param(f"{key}_sinks", f"{url}sinks", 0, "int", low=0, high=MAX_PART),
        Param(f"{key}_chunk", f"{url}chunk", 0, "int", low=0, high=MAX_PART),
        Param(f"{key}_docmask", f"{url}docmask", True, "bool"),
        Param(f"{key}_reset", f"{url}reset", True, "bool"),
    ]


def batching_params(key: str, max_length: int = 8192) -> list[Param]:
    """URL-backed state for how texts become rows: padding side, length, packing."""
    return [
        Param(f"{key}_side", "side", "right", "choice", choices=PADDING_SIDES),
        Param(f"{key}_length", "length", None, "int", low=1, high=max_length),
        Param(f"{key}_pack", "pack", False, "bool"),
    ]


# The parts only :func:`more_masks` draws; a page without it leaves them out of its state.
MORE_PARTS = ("prefix_lm", "sinks", "chunk", "docmask", "reset", "pack")


def model_params(prefix: str, default_text: str, more: bool = True) -> list[Param]:
    """URL-backed state for the model, the texts and the masks of a model page (with ``more``,
    the parts of :func:`more_masks` too)."""
    params = [
        model_param(f"{prefix}_model"),
        Param(f"{prefix}_text", "text", default_text),
        *mask_params(prefix),
        *batching_params(prefix),
    ]
    return [param for param in params if more or param.key.removeprefix(f"{prefix}_") not in MORE_PARTS]


def reset_more_masks(key: str) -> None:
    """Switch off the parts :func:`more_masks` draws for one policy (for example buttons)."""
    for name, off in (("prefix_lm", 0), ("sinks", 0), ("chunk", 0), ("docmask", True), ("reset", True)):
        st.session_state[f"{key}_{name}"] = off


def policy_from_state(key: str, batch_key: str | None = None) -> MaskPolicy:
    """The :class:`MaskPolicy` the controls of ``key`` (masks) and ``batch_key`` (batching) set.

    The one place where a widget's 0 becomes None ("off"). A part whose control is disabled
    (sinks without a window, a prefix without the causal mask, document parts without packing)
    is left out, so a combination the controls cannot make never reaches the policy.
    """
    state = st.session_state
    batch_key = batch_key or key

    def width(name: str) -> int | None:
        return int(state.get(f"{key}_{name}") or 0) or None

    causal = bool(state[f"{key}_causal"])
    window = width("window")
    pack = bool(state.get(f"{batch_key}_pack", False))
    length = state.get(f"{batch_key}_length")
    return MaskPolicy(
        causal=causal,
        padding_mask=bool(state[f"{key}_padding"]),
        window=window,
        padding_side=state.get(f"{batch_key}_side", "right"),
        max_length=None if length is None else int(length),
        prefix=width("prefix_lm") if causal else None,
        sinks=width("sinks") if window else None,
        chunk=width("chunk"),
        pack=pack,
        document_mask=bool(state.get(f"{key}_docmask", True)) or not pack,
        reset_positions=bool(state.get(f"{key}_reset", True)) or not pack,
    )


def more_masks(slot, key: str, pack_key: str | None = None, expanded: bool | None = None) -> None:
    """The ``More masks`` expander: prefix-LM, attention sinks, chunks and packed documents.

    Args:
        slot: where to draw it (a column or ``st``).
        key: the policy's state prefix (``ex``, ``cmp_a``, ...).
        pack_key: the state prefix of the ``Pack texts into one row`` switch; None when the page
            draws that switch elsewhere (Compare shares it between its two sides).
        expanded: open it; None = open when one of its parts is on.
    """
    state = st.session_state
    parts_on = any(state.get(f"{key}_{name}") for name in ("prefix_lm", "sinks", "chunk"))
    packed_key = pack_key or key
    if expanded is None:
        expanded = parts_on or bool(state.get(f"{packed_key}_pack"))
    with slot.expander(_("More masks: prefix-LM, sinks, chunks, packing"), expanded=expanded):
        causal, window = bool(state.get(f"{key}_causal")), bool(state.get(f"{key}_window"))
        widths = st.columns(3)
        widths[0].number_input(
            _("Prefix-LM (tokens)"),
            min_value=0,
            max_value=MAX_PART,
            step=1,
            key=f"{key}_prefix_lm",
            disabled=not causal,
            help=_(
                "0 = off. The first P tokens of each text see each other both ways; the rest stay "
                "causal (T5, PaliGemma). Needs the causal mask."
            ),
        )
        widths[1].number_input(
            _("Attention sinks (tokens)"),
            min_value=0,
            max_value=MAX_PART,
            step=1,
            key=f"{key}_sinks",
            disabled=not window,
            help=_(
                "0 = off. The first S tokens of each text stay visible to every query beside the "
                "sliding window (StreamingLLM). Needs a sliding window."
            ),
        )
        widths[2].number_input(
            _("Chunk size (tokens)"),
            min_value=0,
            max_value=MAX_PART,
            step=1,
            key=f"{key}_chunk",
            help=_(
                "0 = off. Tokens attend only within their own chunk of C tokens (causally, with the "
                "causal mask on), nothing across chunks (Llama 4)."
            ),
        )
        if pack_key is not None:
            st.toggle(
                _("Pack the texts into one row"),
                key=f"{pack_key}_pack",
                help=_(
                    "Every line becomes a document in one row, one after another, as packed "
                    "training batches do, instead of one padded row per text."
                ),
            )
        packed = bool(state.get(f"{packed_key}_pack"))
        switches = st.columns(2)
        switches[0].toggle(
            _("Document mask"),
            key=f"{key}_docmask",
            disabled=not packed,
            help=_(
                "Packed: a block-diagonal mask, so no token attends to another document. Off: "
                "cross-document contamination."
            ),
        )
        switches[1].toggle(
            _("Restart positions per document"),
            key=f"{key}_reset",
            disabled=not packed,
            help=_(
                "Packed: position ids restart at 0 at each document, as each text alone would "
                "have them. Off: positions run on across the row."
            ),
        )
        ignored = []
        if state.get(f"{key}_prefix_lm") and not causal:
            ignored.append(_("the prefix (it needs the causal mask)"))
        if state.get(f"{key}_sinks") and not window:
            ignored.append(_("the sinks (they need a sliding window)"))
        if ignored:
            st.caption(_("Ignored for now: {parts}.").format(parts=_(" and ").join(ignored)))


def numbered(labels: Sequence[str], index: int) -> str:
    """``"3: cat"``: an option label with its zero-based position. Bind ``labels`` with
    ``functools.partial``: a lambda written in a page would keep the page's namespace (and its
    captures) alive for as long as the widget remembers its ``format_func``."""
    return f"{index}: {labels[index]}"


def translated(labels: Mapping[str, str], option: str) -> str:
    """An option's label from a table of :func:`~attention_viz.i18n.N_`-marked labels, in the run's
    language. Bind ``labels`` with ``functools.partial``, as for :func:`numbered`."""
    return _(labels[option])


def set_value(key: str, value: object) -> None:
    """Button callback: put ``value`` into ``st.session_state[key]`` (module-level for the same
    reason as :func:`numbered`)."""
    st.session_state[key] = value


def move_row(key: str, delta: int, last: int) -> None:
    """Button callback: move the zero-based row in ``st.session_state[key]`` by ``delta`` within 0..last."""
    st.session_state[key] = min(max(0, (st.session_state.get(key) or 0) + delta), last)


def texts_of(raw: str) -> tuple[str, ...]:
    """The non-empty lines of a text box, one text per line."""
    return tuple(line.strip() for line in raw.splitlines() if line.strip())


def layer_note(loaded: LoadedModel, policy: MaskPolicy, layer: int) -> MaskPolicy:
    """The masks ``layer`` really applies under ``policy``, saying so in a caption when the
    layer adds the model's own sliding window or chunk to them."""
    applied = loaded.layer_policy(policy, layer)
    if applied.window != policy.window:
        st.caption(
            _(
                "Layer {layer} is one of this model's sliding-window layers: on top of the masks above it "
                "keeps its own window of {window} tokens (each token sees itself and at most {back} before "
                "it). A window set here applies to every layer instead."
            ).format(layer=layer, window=applied.window, back=applied.window - 1)
        )
    elif applied.chunk != policy.chunk:
        st.caption(
            _(
                "Layer {layer} is one of this model's chunked layers: on top of the masks above it keeps "
                "its own chunks of {size} tokens. Chunks set here apply to every layer instead."
            ).format(layer=layer, size=applied.chunk)
        )
    return applied


def model_param(key: str) -> Param:
    """URL-backed state for a model picker: every model this server offers (bundled, then the
    host's allowlist)."""
    return Param(key, "model", DEFAULT_MODEL, "choice", choices=available_models())


def short_name(name: str) -> str:
    """A model as the picker names it: a bundled name, or an allowlisted folder's own name (its
    whole path when two allowlisted folders share that name)."""
    models = available_models()
    folder = Path(name).name
    if name in BUNDLED or not folder or sum(Path(each).name == folder for each in models) > 1:
        return name
    return folder


def model_label(name: str) -> str:
    """``"smollm2 · SmolLM2-135M-Instruct · causal decoder · …"``: a model as the picker shows it;
    a model that cannot open says why in a few words (picking it shows the whole sentence)."""
    info, _problem, short = cache.model_summary(name)
    if info is None:
        return f"⚠ {short_name(name)} · {short}"
    return f"{short_name(name)} · {info.describe()}"


def model_help() -> str | None:
    """The model picker's help: where the models come from, and every allowlisted entry that
    cannot open with its whole reason (the picker's line is cut to the column's width)."""
    lines = [_("The bundled models, then the models this server's host allows (ATTNVIZ_ALLOWED_MODELS).")]
    for name in available_models():
        info, problem, _short = cache.model_summary(name)
        if info is None:
            lines.append(f"- ⚠ {escape_markdown(problem)}")
    return "\n".join(lines)


def side_label(side: str) -> str:
    """The padding side as the radio shows it, in the run's language."""
    return _(SIDE_LABELS[side])


def model_picker(prefix: str) -> str:
    """The model select box (bundled and allowlisted models). Picking another model resets
    ``Causal mask`` to that model's own choice."""
    return st.selectbox(
        _("Model"),
        available_models(),
        key=f"{prefix}_model",
        help=model_help(),
        format_func=model_label,
        on_change=lambda: st.session_state.pop(f"{prefix}_causal", None),
    )


# Marked here, translated where shown: the help of every ``Causal mask`` toggle starts with it.
CAUSAL_HELP = N_("On: each token sees only itself and earlier tokens, in every layer. ")


def mask_switches(causal_slot, padding_slot, causal_key: str, padding_key: str, causal_help: str) -> None:
    """The ``Causal mask`` and ``Padding mask`` toggles, each in its slot (a column or ``st``).

    ``causal_help`` is shown as given: translate it first (:data:`CAUSAL_HELP` with ``_``).
    """
    causal_slot.toggle(_("Causal mask"), key=causal_key, help=causal_help)
    padding_slot.toggle(
        _("Padding mask"),
        key=padding_key,
        help=_("Off simulates a forgotten attention_mask: real tokens may attend to padding."),
    )


def window_input(slot, key: str) -> None:
    """The ``Sliding window`` width (0 = off) in its slot (a column or ``st``)."""
    slot.number_input(
        _("Sliding window"),
        min_value=0,
        max_value=MAX_WINDOW,
        step=1,
        key=key,
        help=_("0 = off. Otherwise each token sees only this many neighbours (itself included)."),
    )


def model_and_texts(
    prefix: str,
    label: str | None = None,
    height: int = 80,
    most: int | None = None,
) -> tuple[str, LoadedModel, tuple[str, ...]]:
    """The model picker beside the text box; loads the model (with a spinner).

    ``label`` is the text box's label, translated by the caller (None: "Text (one per line; …)").

    Returns ``(model name, loaded model, texts)``: at most ``most`` texts (the page's own limit)
    and at most the host's ``ATTNVIZ_MAX_TEXTS``; they may be empty, for the page to say so.
    """
    label = label or _("Text (one per line; several lines make a padded batch)")
    top = st.columns([1, 2])
    with top[0]:
        model_name = model_picker(prefix)
    with top[1]:
        st.text_area(label, key=f"{prefix}_text", height=height)
    texts = texts_of(st.session_state[f"{prefix}_text"])
    host_most = load_settings().max_texts
    most = min(host_most, most) if most else host_most
    if len(texts) > most:
        # The box keeps every line; only the batch is cut, so that one request stays bounded.
        st.info(
            _("{count} lines were given; the first {most} are used (one batch holds at most {most}).").format(
                count=len(texts), most=most
            )
        )
        texts = texts[:most]
    return model_name, model_or_stop(model_name), texts


def follow_length(prefix: str, natural_length: int, max_length: int) -> None:
    """Keep ``{prefix}_length`` on the text's own length until the user moves the slider."""
    length_key = f"{prefix}_length"
    natural_length = max(1, min(natural_length, max_length))
    previous_natural = st.session_state.get(f"_{prefix}_natural")
    current = st.session_state.get(length_key)
    if current is not None and current > max_length:
        # From a link, or kept from a model with a longer limit: say so rather than change it silently.
        st.info(
            _(
                "Sequence length {current:,} is more than this model's limit of {limit:,} tokens; "
                "the text's own length ({natural:,}) is used."
            ).format(current=current, limit=max_length, natural=natural_length)
        )
    following = current is None or current == previous_natural or current > max_length
    # Written only when it changes: writing a widget's key sends the value back to the browser,
    # which would undo a key press that is already on its way (the slider would jump back).
    if following and current != natural_length:
        st.session_state[length_key] = natural_length
    st.session_state[f"_{prefix}_natural"] = natural_length


def mask_controls(
    prefix: str,
    decoder: bool,
    natural_length: int,
    max_length: int,
    show_window: bool = True,
    show_side: bool = True,
    more: bool = True,
) -> MaskPolicy:
    """Draw ``Causal mask``, ``Padding mask``, ``Sequence length`` (and window, padding side,
    and with ``more`` the :func:`more_masks` expander).

    The causal toggle starts at the model's own choice; the sequence length follows the text's
    length until the user moves it.
    """
    causal_key, length_key = f"{prefix}_causal", f"{prefix}_length"
    # Unset (first visit, or the user just picked another model): start at the model's own choice.
    if st.session_state.get(causal_key) is None:
        st.session_state[causal_key] = MaskPolicy().for_model(decoder).causal
    follow_length(prefix, natural_length, max_length)

    # Presentation mode (no window) enlarges the labels: the toggles get more room.
    columns = st.columns([1.3, 1.3, 2.2, 1] if show_window else [1.8, 1.8, 3])
    mask_switches(
        columns[0],
        columns[1],
        causal_key,
        f"{prefix}_padding",
        _(CAUSAL_HELP)
        + (_("This decoder was trained with it.") if decoder else _("This encoder never had it.")),
    )
    columns[2].slider(
        _("Sequence length"),
        min_value=1,
        max_value=max_length,
        key=length_key,
        help=_("Every text is cut or padded to this many tokens."),
    )
    if show_window:
        window_input(columns[3], f"{prefix}_window")
    if show_side:
        padding_side_radio(st, f"{prefix}_side")
    if more:
        more_masks(st, prefix, pack_key=prefix)
    return policy_or_stop(prefix)


def padding_side_radio(slot, key: str) -> None:
    """The ``Padding side`` choice (right or left) in its slot (a column or ``st``)."""
    slot.radio(_("Padding side"), PADDING_SIDES, key=key, format_func=side_label, horizontal=True)


def policy_or_stop(key: str, batch_key: str | None = None) -> MaskPolicy:
    """:func:`policy_from_state`, or one clear line and a stopped page if the values cannot make a
    policy (only a hand-edited link can get there: the controls keep combinations valid)."""
    try:
        return policy_from_state(key, batch_key)
    except (TypeError, ValueError) as error:
        st.error(str(error))
        st.stop()


def page_masks(
    prefix: str, model_name: str, loaded: LoadedModel, texts: tuple[str, ...], presentation: bool
) -> MaskPolicy:
    """:func:`mask_controls` for a model page: the length follows the texts' token count, and
    presentation mode hides the padding-side control and the window control, unless a window
    is on (a class must see every mask that shapes the picture)."""
    packed = bool(st.session_state.get(f"{prefix}_pack"))
    natural = run_or_stop(lambda: cache.token_count(model_name, texts, packed), _("Tokenising…"))
    return mask_controls(
        prefix,
        loaded.decoder,
        natural,
        loaded.max_positions,
        show_window=not presentation or bool(st.session_state.get(f"{prefix}_window")),
        show_side=not presentation,
    )


def scale_picker(key: str, stage: str) -> str:
    """The ``Colour scale`` choice for weights (fixed 0–1, per row, log); other stages use their own.

    Returns the scale to draw with.
    """
    if stage != "weights":
        return "fixed"
    st.radio(
        _("Colour scale"),
        SCALES,
        format_func=scale_label,
        key=key,
        horizontal=True,
        help=_(
            "Fixed: 0 to 1, so toggles never rescale. Per row: each query row divided by its largest "
            "weight, for long texts where attention spreads thin. Log: tiny weights become visible. "
            "Hover always shows the true weight."
        ),
    )
    return st.session_state[key]


# Zoom is offered from this many tokens on; a zoomed range is drawn with exact hover up to ZOOM_MAX_SPAN.
ZOOM_MIN_TOKENS = 24
ZOOM_MAX_SPAN = 512
ZOOM_DEFAULT_SPAN = 48
ZOOM_NAMES = {"queries": N_("queries"), "keys": N_("keys")}


def zoom_ranges(prefix: str, length: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """A ``Zoom`` switch with a query range and a key range (inclusive, zero-based).

    Returns ``((first query, last query), (first key, last key))``, or None when zoom is off
    or the text is short enough to read whole.
    """
    if length < ZOOM_MIN_TOKENS:
        return None
    if not st.toggle(
        _("Zoom into a range of queries and keys"),
        key=f"{prefix}_zoom",
        help=_(
            "Draws the chosen rows and columns of the focused head at full resolution, with every "
            "token named and every value on hover."
        ),
    ):
        return None
    ranges = []
    columns = st.columns(2)
    for column, name in zip(columns, ("queries", "keys"), strict=True):
        key = f"{prefix}_zoom_{name}"
        low, high = st.session_state.get(key) or (max(0, length - ZOOM_DEFAULT_SPAN), length - 1)
        st.session_state[key] = (min(low, length - 1), min(high, length - 1))
        shown = _(ZOOM_NAMES[name])
        column.slider(_("Zoom: {name} (positions)").format(name=shown), 0, length - 1, key=key)
        low, high = st.session_state[key]
        if high - low + 1 > ZOOM_MAX_SPAN:
            high = low + ZOOM_MAX_SPAN - 1
            column.caption(
                _("At most {most} {name} at a time: showing {low}–{high}.").format(
                    most=ZOOM_MAX_SPAN, name=shown, low=low, high=high
                )
            )
        ranges.append((low, high))
    return ranges[0], ranges[1]
