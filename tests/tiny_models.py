"""Tiny random-config models of the architectures the app supports, saved to a folder.

Each builder makes a seeded, randomly initialised model small enough to run in milliseconds
(hidden 32, 2–3 layers, 4 heads, 2 KV heads where the architecture shares them), saves it as
safetensors with the bundled MiniLM tokenizer beside it, and returns the folder: exactly what
:func:`attention_viz.loading.load_model` reads from an allowlisted directory. No network.

The tokenizer is MiniLM's (BERT WordPiece, 30,522 tokens, ``[PAD]`` = 0) for every model, so
every config has ``vocab_size`` 30,522 and ``pad_token_id`` 0.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import PreTrainedConfig, PreTrainedModel

VOCAB = 30522  # the MiniLM tokenizer's vocabulary
PAD = 0  # its [PAD] id
HIDDEN = 32
HEADS = 4
KV_HEADS = 2  # grouped-query attention: two query heads share each KV head
HEAD_DIM = HIDDEN // HEADS
INTERMEDIATE = 64
POSITIONS = 128
WINDOW = 4  # the sliding window of the sliding layers; test texts are longer than this
# transformers' default of 0.02 gives scores near 0 and near-uniform weights, which would hide a
# wrong position or scale; 0.3 gives scores of a few units, so every row has a clear peak.
INIT = 0.3
SEED = 0
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")

# Shared by the RoPE decoders (Llama, Qwen2, Mistral, Gemma).
DECODER = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    intermediate_size=INTERMEDIATE,
    num_attention_heads=HEADS,
    num_key_value_heads=KV_HEADS,
    max_position_embeddings=POSITIONS,
    initializer_range=INIT,
    pad_token_id=PAD,
)
# Shared by the BERT-style encoders.
ENCODER = dict(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    num_hidden_layers=2,
    num_attention_heads=HEADS,
    intermediate_size=INTERMEDIATE,
    max_position_embeddings=POSITIONS,
    initializer_range=INIT,
    pad_token_id=PAD,
)


@dataclass(frozen=True)
class TinyModel:
    """One architecture to build.

    Attributes:
        name: the test id (``llama``, ``qwen2-sliding``, ...).
        class_name: the transformers model class that is saved (its name goes into config.json's
            ``architectures``, which the app reads to tell a decoder from an encoder).
        decoder: a causal language model.
        config: makes the transformers config.
    """

    name: str
    class_name: str
    decoder: bool
    config: Callable[[], PreTrainedConfig]

    @property
    def model_class(self) -> type[PreTrainedModel]:
        return getattr(transformers, self.class_name)


def _gemma3() -> PreTrainedConfig:
    return transformers.Gemma3TextConfig(
        **DECODER,
        num_hidden_layers=3,
        head_dim=HEAD_DIM,
        query_pre_attn_scalar=HEAD_DIM,  # scale 1/sqrt(head_dim), as for the other models
        sliding_window=WINDOW,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    )


TINY: dict[str, TinyModel] = {
    spec.name: spec
    for spec in (
        TinyModel(
            "llama",
            "LlamaForCausalLM",
            True,
            lambda: transformers.LlamaConfig(**DECODER, num_hidden_layers=2),
        ),
        TinyModel(
            "qwen2",
            "Qwen2ForCausalLM",
            True,
            lambda: transformers.Qwen2Config(**DECODER, num_hidden_layers=2),
        ),
        # Layers from max_window_layers on slide: layer 0 full, layers 1 and 2 sliding.
        TinyModel(
            "qwen2-sliding",
            "Qwen2ForCausalLM",
            True,
            lambda: transformers.Qwen2Config(
                **DECODER,
                num_hidden_layers=3,
                use_sliding_window=True,
                sliding_window=WINDOW,
                max_window_layers=1,
            ),
        ),
        # Mistral has no layer_types: every layer slides.
        TinyModel(
            "mistral-sliding",
            "MistralForCausalLM",
            True,
            lambda: transformers.MistralConfig(**DECODER, num_hidden_layers=2, sliding_window=WINDOW),
        ),
        TinyModel("gemma3", "Gemma3ForCausalLM", True, _gemma3),
        TinyModel(
            "gpt2",
            "GPT2LMHeadModel",
            True,
            lambda: transformers.GPT2Config(
                vocab_size=VOCAB,
                n_embd=HIDDEN,
                n_layer=2,
                n_head=HEADS,
                n_inner=INTERMEDIATE,
                n_positions=POSITIONS,
                initializer_range=INIT,
                pad_token_id=PAD,
                bos_token_id=101,  # the tokenizer's [CLS] and [SEP]; GPT-2's own 50256 is out of range
                eos_token_id=102,
            ),
        ),
        TinyModel("bert", "BertModel", False, lambda: transformers.BertConfig(**ENCODER)),
        # RoBERTa numbers positions from padding_idx + 1 (here pad_token_id 0, so from 1; the
        # released checkpoints have pad 1, so from 2), skipping pads; see test_architectures.py.
        TinyModel("roberta", "RobertaModel", False, lambda: transformers.RobertaConfig(**ENCODER)),
    )
}

# Gemma 2 caps its attention scores (tanh soft-capping), which the reference attention does not
# do; the app refuses it. Not in TINY: it is built only to check that refusal.
GEMMA2_SOFTCAPPED = TinyModel(
    "gemma2-softcapped",
    "Gemma2ForCausalLM",
    True,
    lambda: transformers.Gemma2Config(
        **DECODER,
        num_hidden_layers=2,
        head_dim=HEAD_DIM,
        query_pre_attn_scalar=HEAD_DIM,
        sliding_window=WINDOW,
        attn_logit_softcapping=50.0,  # Gemma 2's released value
    ),
)


def copy_tokenizer(folder: Path) -> None:
    """Copy the bundled MiniLM tokenizer's files into ``folder`` (no network)."""
    from attention_viz.loading import BUNDLED, bundled_path

    source = bundled_path(BUNDLED["minilm"])
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, folder / name)


def build(spec: TinyModel, folder: Path) -> Path:
    """Save a seeded random ``spec`` model (safetensors) and the MiniLM tokenizer in ``folder``.

    Returns ``folder``: config.json, model.safetensors and the tokenizer files.
    """
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    model = spec.model_class(spec.config())
    model.save_pretrained(folder)  # safetensors by default
    copy_tokenizer(folder)
    return folder
