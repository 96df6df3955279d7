"""The architecture matrix: every supported architecture, captured under every mask, equals
transformers' own eager attention in every layer, and the app opens it.

Each architecture is a tiny random model built once per module (``tiny_models``), loaded by the
app from an allowlisted folder and, independently, by transformers with its eager attention.

* Under the default masks eager gets only the plain 2-D ``attention_mask`` and builds its OWN
  masks (causal, padding, its sliding window in sliding layers): this checks that our defaults
  are the model's.
* Under every toggle eager gets the mask each layer of the capture applied, as an additive
  float mask (eager adds its mask to the scores); a model whose layers are of several kinds
  (``config.layer_types``) gets one mask per kind, as its forward accepts.

Only query rows that attend to something are compared: eager spreads an empty row uniformly,
we zero it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest
from tests_support import ROOT
from tiny_models import GEMMA2_SOFTCAPPED, TINY, WINDOW, TinyModel, build
from transformers import AutoModel, AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel

from attention_viz.capture import Capture, capture
from attention_viz.errors import UserFacingError
from attention_viz.i18n import language
from attention_viz.loading import LoadedModel, load_model
from attention_viz.policy import MaskPolicy

# float32 softmax of the same scores agrees to ~1e-7; a wrong mask or position is off by ~1e-1.
TOLERANCE = 1e-5
# Two texts of different lengths, both longer than the sliding window (4), so there is padding
# and the window hides keys.
TEXTS = ["The cat sat on the mat because it was tired.", "Hi there, my friend."]
SLIDING = "sliding_attention"

# The model's default masks, batched three ways: no padding (the app passes the plain mask),
# padded on the right, padded on the left.
DEFAULTS = {
    "one text": ([TEXTS[0]], MaskPolicy()),
    "right padding": (TEXTS, MaskPolicy()),
    "left padding": (TEXTS, MaskPolicy(padding_side="left")),
}
# Every toggle, each alone (the causal flip depends on the model: see test below). causal=None
# is the model's own choice.
TOGGLES = {
    "padding mask off": MaskPolicy(padding_mask=False),
    "padding side left": MaskPolicy(padding_side="left"),
    "left padding, padding mask off": MaskPolicy(padding_side="left", padding_mask=False),
    "window 3": MaskPolicy(window=3),
    "prefix 2": MaskPolicy(causal=True, prefix=2),
    "window 3 + 1 sink": MaskPolicy(window=3, sinks=1),
    "chunks of 3": MaskPolicy(chunk=3),
    "packed": MaskPolicy(pack=True),
    "packed, no document mask": MaskPolicy(pack=True, document_mask=False),
    "packed, no position reset": MaskPolicy(pack=True, reset_positions=False),
    "max_length 20": MaskPolicy(max_length=20),
}


@dataclass(frozen=True)
class Tiny:
    """One architecture, built and loaded twice: by the app and by transformers (eager)."""

    spec: TinyModel
    folder: Path
    loaded: LoadedModel
    eager: PreTrainedModel

    @property
    def config(self) -> PreTrainedConfig:
        return self.eager.config


@pytest.fixture(scope="module", params=list(TINY))
def tiny(request, tmp_path_factory) -> Tiny:
    spec = TINY[request.param]
    folder = build(spec, tmp_path_factory.mktemp(spec.name))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ATTNVIZ_ALLOWED_MODELS", str(folder))
        loaded = load_model(str(folder))
    model_class = AutoModelForCausalLM if spec.decoder else AutoModel
    eager = model_class.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    return Tiny(spec, folder, loaded, eager)


def layer_kinds(config: PreTrainedConfig) -> list[str]:
    """Each layer's kind: ``config.layer_types``, else every layer sliding if the config has a
    window (Mistral), else every layer full."""
    kinds = getattr(config, "layer_types", None)
    if kinds:
        return list(kinds)
    kind = SLIDING if getattr(config, "sliding_window", None) else "full_attention"
    return [kind] * config.num_hidden_layers


def eager_attentions(
    tiny: Tiny,
    result: Capture,
    attention_mask: torch.Tensor | dict[str, torch.Tensor],
    position_ids: torch.Tensor | None,
) -> tuple[torch.Tensor, ...]:
    """transformers' eager attention weights of every layer on the capture's tokens.

    Shape: one ``(B, H, T, T)`` per layer.
    """
    options = {"use_cache": False} if tiny.spec.decoder else {}
    with torch.inference_mode():
        outputs = tiny.eager(
            input_ids=result.input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_attentions=True,
            **options,
        )
    assert len(outputs.attentions) == tiny.config.num_hidden_layers
    return outputs.attentions


def applied_masks(tiny: Tiny, result: Capture) -> torch.Tensor | dict[str, torch.Tensor]:
    """The masks the capture's layers applied, additive for eager: one ``(B, 1, T, T)``, or one
    per layer kind when the model's layers are of several kinds."""
    per_kind: dict[str, torch.Tensor] = {}
    for index, kind in enumerate(layer_kinds(tiny.config)):
        mask = result.layers[index].mask  # (B, 1, T, T) bool
        first = per_kind.setdefault(kind, mask)
        assert torch.equal(first, mask), f"layer {index} ({kind}) applied another mask than its kind's first"
    # Eager adds the mask to the scores: a bool would add 0 / 1, so turn it into 0 / finfo.min
    # (transformers' own convention; -inf would make a fully masked row NaN).
    additive = {
        kind: torch.where(mask, 0.0, torch.finfo(torch.float32).min) for kind, mask in per_kind.items()
    }
    return additive if len(additive) > 1 else next(iter(additive.values()))


def assert_matches_eager(result: Capture, attentions: tuple[torch.Tensor, ...]) -> None:
    """Every captured layer's weights equal eager's over rows that attend to something."""
    for index, layer in result.layers.items():
        rows = ~layer.empty_rows  # (B, H, T)
        assert rows.any(), f"layer {index}: no query row attends to anything"
        assert attentions[index].shape == layer.weights.shape
        delta = float((attentions[index] - layer.weights).abs()[rows].max())
        assert delta <= TOLERANCE, f"layer {index}: max |Δ| = {delta:.2e} against eager attention"


def check_against_applied_masks(tiny: Tiny, policy: MaskPolicy, texts: list[str] = TEXTS) -> None:
    result = capture(tiny.loaded, texts, policy=policy, effect=False)
    assert sorted(result.layers) == list(range(tiny.config.num_hidden_layers))
    attentions = eager_attentions(tiny, result, applied_masks(tiny, result), result.position_ids)
    assert_matches_eager(result, attentions)


def test_the_app_tells_a_decoder_from_an_encoder(tiny):
    assert tiny.loaded.decoder is tiny.spec.decoder
    assert tiny.loaded.num_layers == tiny.config.num_hidden_layers


@pytest.mark.parametrize("batching", list(DEFAULTS))
def test_the_default_masks_are_the_models_own_in_every_layer(tiny, batching):
    texts, policy = DEFAULTS[batching]
    result = capture(tiny.loaded, texts, policy=policy, effect=False)
    # The plain 2-D mask: the eager model builds its own causal, padding and window masks.
    attentions = eager_attentions(tiny, result, result.attention_mask, result.position_ids)
    assert_matches_eager(result, attentions)


def test_the_capture_gives_the_model_the_positions_it_numbers_itself(tiny):
    """Right-padded texts under the default masks, and eager numbering positions its own way.

    RoBERTa numbers its positions from the token ids: real tokens from ``padding_idx + 1`` on,
    pads at ``padding_idx``; positions ``0..T-1`` would be off by ``padding_idx + 1``.
    (Left padding is left out: there a decoder's own numbering counts the pads, and the app
    deliberately counts real tokens only, as ``generate`` does.)
    """
    result = capture(tiny.loaded, TEXTS, policy=MaskPolicy(), effect=False)
    attentions = eager_attentions(tiny, result, result.attention_mask, position_ids=None)
    assert_matches_eager(result, attentions)


@pytest.mark.parametrize("batching", ["one text", "right padding"])
def test_sliding_layers_keep_the_models_window_and_full_layers_do_not(tiny, batching):
    texts, policy = DEFAULTS[batching]
    result = capture(tiny.loaded, texts, policy=policy, effect=False)
    length = result.input_ids.shape[1]
    assert length > WINDOW
    positions = torch.arange(length)
    beyond = positions[:, None] - positions[None, :] >= WINDOW  # (T, T): key WINDOW or more back
    for index, kind in enumerate(layer_kinds(tiny.config)):
        sees_beyond = bool(result.layers[index].mask[:, 0, beyond].any())
        if kind == SLIDING:
            assert not sees_beyond, f"layer {index} slides, but a query sees keys {WINDOW}+ tokens back"
        else:
            assert sees_beyond, f"layer {index} is a full layer, but no query sees {WINDOW}+ tokens back"


def test_flipping_the_causal_mask_matches_eager_in_every_layer(tiny):
    check_against_applied_masks(tiny, MaskPolicy(causal=not tiny.spec.decoder))


@pytest.mark.parametrize("toggle", list(TOGGLES))
def test_every_toggle_matches_eager_in_every_layer(tiny, toggle):
    check_against_applied_masks(tiny, TOGGLES[toggle])


def test_the_model_explorer_opens_it(tiny, monkeypatch):
    monkeypatch.setenv("ATTNVIZ_ALLOWED_MODELS", str(tiny.folder))
    app = AppTest.from_file(str(ROOT / "pages" / "2_model_explorer.py"), default_timeout=60)
    app.query_params.update({"model": str(tiny.folder)})
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    assert app.session_state["ex_model"] == str(tiny.folder)
    # The last layer too (for Gemma 3 and Qwen2 with a window, another kind than layer 0).
    with language("en"):  # AppTest words the widgets' options in the test's own language
        app.slider(key="ex_layer").set_value(tiny.loaded.num_layers - 1).run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]


def test_a_gemma2_that_caps_its_scores_is_refused_with_one_sentence(tmp_path, monkeypatch):
    folder = build(GEMMA2_SOFTCAPPED, tmp_path / GEMMA2_SOFTCAPPED.name)
    monkeypatch.setenv("ATTNVIZ_ALLOWED_MODELS", str(folder))
    with pytest.raises(UserFacingError, match=r"(?i)capping") as refused:
        load_model(str(folder))
    assert "\n" not in str(refused.value)
