"""Every Streamlit cache in the app lives here: models in ``cache_resource``, results in ``cache_data``.

Result caches are bounded (``max_entries`` and a TTL) so a classroom of sessions cannot grow
memory without limit. Arguments named with a leading underscore are left out of cache keys.

A result that holds words (a policy described in a sentence, a note) is cached per language: the
run's language (:mod:`attention_viz.i18n`) is part of its key, so a session in Chinese never gets
the English words another session cached. Results that hold only numbers and tokens are shared.
"""

from __future__ import annotations

import dataclasses
import gc

import streamlit as st
import torch

from attention_viz.capture import Capture, capture_and_output, default_output, effect_of, output_bytes
from attention_viz.effect import OutputEffect
from attention_viz.errors import UserFacingError
from attention_viz.generation import Generation, generate_stepwise
from attention_viz.i18n import _, get_language, language
from attention_viz.loading import LoadedModel, load_model
from attention_viz.mask_check import MaskCheck, mask_check
from attention_viz.models import ModelInfo, ModelRefused, model_info
from attention_viz.packing import PackingCheck, packing_check
from attention_viz.playground import PlaygroundResult, run_playground
from attention_viz.policy import MaskPolicy
from attention_viz.rollout import attention_rollout, rollout_reach
from attention_viz.stats import head_statistics

# A Playground result is at most about 4 MB (8 sentences, 8 heads, 64 tokens, four stages), so
# these entries hold at most about 256 MB; a real capture can reach the memory budget
# (ATTNVIZ_MEMORY_BUDGET_MB) at 2048 tokens, so keep few of them: at most entries × budget.
PLAYGROUND_CACHE_ENTRIES = 64
CAPTURE_CACHE_ENTRIES = 8
# The default masks' output of a text is what every output effect of it is measured against, so
# it is kept across toggles: one forward less per toggle. Only small ones (a decoder's logits are
# B × T × vocabulary floats: 8 MB for two 20-token texts of SmolLM2), one per student of a class
# of 30 working at once: at most entries × size, 256 MB.
DEFAULT_OUTPUT_ENTRIES = 32
DEFAULT_OUTPUT_MAX_BYTES = 8 * 2**20
RESULT_TTL_SECONDS = 3600
# A short text's capture of every layer is also kept layer by layer (see layer_of_every): a layer
# switch then copies one layer out of the cache, not all of them. Every bundled model has at most
# 32 layers, so these entries hold the layers of as many captures as CAPTURE_CACHE_ENTRIES.
LAYERS_PER_MODEL = 32
LAYER_CACHE_ENTRIES = CAPTURE_CACHE_ENTRIES * LAYERS_PER_MODEL
# A model folder a host is fixing is read again after this long.
MODEL_SUMMARY_TTL_SECONDS = 30


@st.cache_data(max_entries=PLAYGROUND_CACHE_ENTRIES, ttl=RESULT_TTL_SECONDS, show_spinner=False)
def playground(
    sentences: tuple[str, ...], policy: MaskPolicy, num_heads: int, width: int, seed: int
) -> PlaygroundResult:
    """Cached :func:`attention_viz.playground.run_playground`."""
    return run_playground(list(sentences), policy, num_heads=num_heads, width=width, seed=seed)


@st.cache_resource(show_spinner=False, max_entries=4)
def model(name: str) -> LoadedModel:
    """One shared instance per model for every session of this server.

    Streamlit collects garbage after every script run (``runner.postScriptGC``); a full collection
    walks every object torch, transformers, plotly and the models made, about 0.25–0.5 s of CPU
    per run. So once a model is loaded, everything alive is frozen out of the collector's walk
    (``gc.freeze``) and each run's collection sees only what the runs made. Loading another model
    unfreezes first, so a model the cache evicted is collected.
    """
    gc.unfreeze()
    loaded = load_model(name)
    gc.collect()
    gc.freeze()
    return loaded


def model_summary(name: str) -> tuple[ModelInfo | None, str | None, str | None]:
    """``(info, None, None)`` from the model's config, or ``(None, why it cannot open, the same
    in a few words)``, in the run's language. Read again after a short while, so a host's fix
    shows without a restart."""
    return _model_summary(name, get_language())


@st.cache_data(max_entries=64, ttl=MODEL_SUMMARY_TTL_SECONDS, show_spinner=False)
def _model_summary(name: str, lang: str) -> tuple[ModelInfo | None, str | None, str | None]:
    with language(lang):
        try:
            return model_info(name), None, None
        except ModelRefused as error:
            return None, str(error), _(error.reason)
        except UserFacingError as error:
            return None, str(error), str(error)


@st.cache_data(max_entries=CAPTURE_CACHE_ENTRIES, ttl=RESULT_TTL_SECONDS, show_spinner=False)
def capture(
    model_name: str, texts: tuple[str, ...], layers: tuple[int, ...], policy: MaskPolicy, effect: bool = False
) -> Capture:
    """Cached :func:`attention_viz.capture.capture` on the shared model.

    Without ``effect`` (the heatmaps never wait for it) the forward stops after the last captured
    layer. With it, the same forward's output is compared with the default masks' (kept by
    :func:`reference`); the effect's label is in the language of the run that made it, so read it
    through :func:`rollout`. Under the default masks that output is itself the reference, and is
    kept as such: the text's first mask toggle then runs the model once, not twice.
    """
    return _captured(model_name, texts, layers, policy, effect)


def _captured(
    model_name: str, texts: tuple[str, ...], layers: tuple[int, ...], policy: MaskPolicy, effect: bool
) -> Capture:
    """:func:`capture`, not kept in the cache."""
    loaded = model(model_name)
    kept = reference(model_name, texts, policy) if effect else None
    captured, output = capture_and_output(
        loaded, list(texts), layers=list(layers), policy=policy, effect=effect, reference_output=kept
    )
    if output is not None:
        _keep_reference(model_name, texts, policy, output)
    return captured


def _keep_reference(
    model_name: str, texts: tuple[str, ...], policy: MaskPolicy, output: torch.Tensor
) -> None:
    """Keep ``output``, a forward's under ``policy``, as the texts' reference if ``policy`` is the
    default masks (with its batching) and the output is small enough to keep.

    Shape: ``output`` is ``(B, T, V)`` or ``(B, T, D)``.
    """
    decoder = model(model_name).decoder
    default_policy = policy.model_default(decoder)
    if policy.for_model(decoder) == default_policy and output.nbytes <= DEFAULT_OUTPUT_MAX_BYTES:
        _reference(model_name, texts, default_policy, _computed=output)


def reference(model_name: str, texts: tuple[str, ...], policy: MaskPolicy) -> torch.Tensor | None:
    """The model's output under its default masks with ``policy``'s batching, cached across the
    toggles of a text. None if ``policy`` is the default (its own output is the reference) or if
    the output is too big to keep (the caller then runs it itself)."""
    loaded = model(model_name)
    default_policy = policy.model_default(loaded.decoder)
    if policy.for_model(loaded.decoder) == default_policy:
        return None
    rows = 1 if policy.pack else len(texts)
    # Every row is cut or padded to max_length if set; else to the longest, counted before truncation.
    length = policy.max_length or token_count(model_name, texts, policy.pack)
    if output_bytes(loaded, length, rows) > DEFAULT_OUTPUT_MAX_BYTES:
        return None
    return _reference(model_name, texts, default_policy)


@st.cache_data(max_entries=DEFAULT_OUTPUT_ENTRIES, ttl=RESULT_TTL_SECONDS, show_spinner=False)
def _reference(
    model_name: str, texts: tuple[str, ...], default_policy: MaskPolicy, _computed: torch.Tensor | None = None
) -> torch.Tensor:
    """The default masks' output of ``texts``; ``_computed`` (left out of the key): that output,
    already run by a capture under those masks, kept as it is instead of running the model."""
    if _computed is not None:
        return _computed
    return default_output(model(model_name), list(texts), default_policy)


def layer_of_every(
    model_name: str, texts: tuple[str, ...], policy: MaskPolicy, effect: bool, layer: int
) -> Capture:
    """Zero-based ``layer`` of the capture of every layer of ``texts`` (:func:`capture` of every
    layer, with ``effect``), as a capture of that layer alone.

    A cached result is copied out of the cache on every read: the capture of every layer of a
    64-token text is 18 MB (SmolLM2), which took a layer switch 30–45 ms to copy, and this one layer
    is 0.6 MB. :func:`rollout` with ``by_layer`` puts every layer here (and only here) when it
    captures them.
    """
    return _layer_of_every(model_name, texts, policy, effect, layer)


@st.cache_data(max_entries=LAYER_CACHE_ENTRIES, ttl=RESULT_TTL_SECONDS, show_spinner=False)
def _layer_of_every(
    model_name: str,
    texts: tuple[str, ...],
    policy: MaskPolicy,
    effect: bool,
    layer: int,
    _every: Capture | None = None,
) -> Capture:
    """``_every`` (left out of the key): that capture of every layer, already at hand. Without it
    (this layer's entry was evicted), the model runs once more and all its layers are kept again."""
    if _every is None:
        _every = _captured(model_name, texts, tuple(range(model(model_name).num_layers)), policy, effect)
        _keep_layers(model_name, texts, policy, effect, _every, but=layer)
    return _every.with_layers([layer])


def _keep_layers(
    model_name: str,
    texts: tuple[str, ...],
    policy: MaskPolicy,
    effect: bool,
    every: Capture,
    but: int | None = None,
) -> None:
    """Keep each layer of ``every`` (a capture of every layer) as :func:`layer_of_every`'s entry,
    but zero-based layer ``but`` (the one being kept by the call that is running)."""
    for layer in every.layers:
        if layer != but:
            _layer_of_every(model_name, texts, policy, effect, layer, _every=every)


def rollout(
    model_name: str, texts: tuple[str, ...], policy: MaskPolicy, effect: bool = False, by_layer: bool = False
) -> tuple[torch.Tensor, torch.Tensor, OutputEffect | None]:
    """Attention rollout through every layer, ``(B, T, T)``, from the cached capture of every layer
    (the explorer's own, for a short text); where it can be non-zero through the layers' masks,
    ``(B, T, T)`` bool (:func:`attention_viz.rollout.rollout_reach`: what its picture greys is the
    rest); and with ``effect`` the output effect that the same forward measured (else None), its
    label in the run's language: one forward serves all three. With ``by_layer`` (a short text:
    small layers) the capture's layers are also kept one by one for :func:`layer_of_every`.
    """
    rolled, reach, measured = _rollout(model_name, texts, policy, effect, by_layer)
    if measured is not None:
        # Its label was written in the language of the run that captured it.
        default_policy = policy.model_default(model(model_name).decoder)
        measured = dataclasses.replace(measured, reference_label=default_policy.describe())
    return rolled, reach, measured


@st.cache_data(max_entries=CAPTURE_CACHE_ENTRIES, ttl=RESULT_TTL_SECONDS, show_spinner=False)
def _rollout(
    model_name: str, texts: tuple[str, ...], policy: MaskPolicy, effect: bool, by_layer: bool
) -> tuple[torch.Tensor, torch.Tensor, OutputEffect | None]:
    # Kept apart from the capture, so a rerun copies only these out of the cache. By layer, the
    # capture is kept only in its layers (as many bytes as the whole: no copy of it is read whole).
    layers = tuple(range(model(model_name).num_layers))
    everything = (_captured if by_layer else capture)(model_name, texts, layers, policy, effect)
    if by_layer:
        _keep_layers(model_name, texts, policy, effect, everything)
    rolled = attention_rollout([everything.layer(layer).weights for layer in layers])
    return rolled, rollout_reach([everything.mask_for(layer) for layer in layers]), everything.effect


def effect(model_name: str, texts: tuple[str, ...], policy: MaskPolicy) -> OutputEffect:
    """Cached :func:`attention_viz.capture.effect_of`: what the masks change in the output (its
    ``reference_label`` in the run's language), against the default masks' output kept by
    :func:`reference`."""
    return _effect(model_name, texts, policy, get_language())


@st.cache_data(max_entries=PLAYGROUND_CACHE_ENTRIES, ttl=RESULT_TTL_SECONDS, show_spinner=False)
def _effect(model_name: str, texts: tuple[str, ...], policy: MaskPolicy, lang: str) -> OutputEffect:
    with language(lang):
        kept = reference(model_name, texts, policy)
        return effect_of(model(model_name), list(texts), policy, reference_output=kept)


@st.cache_data(max_entries=CAPTURE_CACHE_ENTRIES, ttl=RESULT_TTL_SECONDS, show_spinner=False)
def statistics(model_name: str, texts: tuple[str, ...], policy: MaskPolicy):
    """Per-head statistics of every layer (a DataFrame)."""
    loaded = model(model_name)
    return head_statistics(capture(model_name, texts, tuple(range(loaded.num_layers)), policy))


@st.cache_data(max_entries=PLAYGROUND_CACHE_ENTRIES, ttl=RESULT_TTL_SECONDS, show_spinner=False)
def token_count(model_name: str, texts: tuple[str, ...], packed: bool = False) -> int:
    """Tokens in the longest text (packed: in all of them), before any truncation."""
    counts = [len(ids) for ids in model(model_name).tokenize(texts, truncation=False)["input_ids"]]
    return sum(counts) if packed else max(counts)


@st.cache_data(max_entries=CAPTURE_CACHE_ENTRIES, ttl=RESULT_TTL_SECONDS, show_spinner=False)
def packing(model_name: str, texts: tuple[str, ...]) -> PackingCheck:
    """Cached :func:`attention_viz.packing.packing_check` on the shared model."""
    return packing_check(model(model_name), list(texts))


def masks(
    model_name: str, texts: tuple[str, ...], policy: MaskPolicy, block_size: int, item: int
) -> MaskCheck:
    """Cached :func:`attention_viz.mask_check.mask_check` (masks only: the model does not run);
    its notes and drawing are in the run's language."""
    return _masks(model_name, texts, policy, block_size, item, get_language())


@st.cache_data(max_entries=PLAYGROUND_CACHE_ENTRIES, ttl=RESULT_TTL_SECONDS, show_spinner=False)
def _masks(
    model_name: str, texts: tuple[str, ...], policy: MaskPolicy, block_size: int, item: int, lang: str
) -> MaskCheck:
    with language(lang):
        return mask_check(model(model_name), list(texts), policy, block_size, item)


@st.cache_data(max_entries=CAPTURE_CACHE_ENTRIES, ttl=RESULT_TTL_SECONDS, show_spinner=False)
def generation(model_name: str, prompt: str, layer: int, new_tokens: int) -> Generation:
    """Cached :func:`attention_viz.generation.generate_stepwise` on the shared model (one layer
    recorded at every step; at most about 9 MB an entry)."""
    return generate_stepwise(model(model_name), prompt, layer=layer, max_new_tokens=new_tokens)
