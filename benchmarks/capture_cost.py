"""Capture cost: one captured layer of SmolLM2 against a plain forward and ``output_attentions``.

Captures one layer of the bundled SmolLM2 (30 layers, 9 heads) at N = 128, 512, 1024 and 2048
tokens, and compares it in one run with

* **plain SDPA**: the same model with transformers' own ``"sdpa"`` attention, nothing captured;
* **output_attentions eager**: ``"eager"`` attention with ``output_attentions=True``, which
  keeps every layer's weights, 30 × 9 × N² floats.

Two capture cases: **capture** is ``capture(..., effect=False)`` as the app calls it, which ends
the forward pass right after the captured layer (the later layers cannot change it), so it
costs only part of a forward; **whole forward** is the capture's own forward pass
(``run_forward``) recording the same layer and running to the logits, like for like with the
plain forward. The target is judged on the whole forward, the stricter of the two.

Target: the capture within 1.25× of the plain forward at N = 2048.

How it is measured:

* **Inputs.** One long English text, cut to exactly N tokens by ``capture(..., policy=MaskPolicy(max_length=N))``
  (``encode`` truncates to N and pads to N; the text is longer than N, so nothing is padded).
  The baselines get the very same ``input_ids`` and ``position_ids``, prepared with ``encode``
  and ``position_ids_for`` under the policy the capture builds.
* **Masks.** The plain forward gets the 2-D ``attention_mask``, as a user calling
  ``model(input_ids, attention_mask=...)`` would, so SDPA takes its fast causal path: the
  strictest baseline (``--plain-mask 4d`` gives it the capture's 4-D boolean mask from
  ``policy.build`` instead, which SDPA runs more slowly). Eager attention *adds* its mask to the
  scores, so it gets the same boolean mask as 0 / ``finfo(float32).min``, which is what
  transformers' ``eager_mask`` builds.
* **One model.** The attention implementation is switched with ``set_attn_implementation``
  outside the timed region and switched back to ``attention_viz`` afterwards.
* **Time.** Wall clock of one call under ``torch.inference_mode()``. Per N: one warm-up round,
  then ``--repeats`` rounds (``--long-repeats`` from N = 2048). Each round runs all four cases,
  in an order that rotates per round. The table shows medians; a ratio is median / median of
  the plain forward.
* **Other processes.** On a shared 2-core machine torch spreads each call over both cores, so
  another process's load slows the call it lands on several times over, not by its share (we
  saw 6 s become 31 s). :class:`common.OtherLoad` measures how many cores other processes used
  during each call. Before each call we wait (up to ``--max-wait`` seconds) for a quiet
  machine; a call that others still disturbed (more than ``--max-other-load`` cores) is re-run
  (up to ``--retries`` times), and medians use the quiet calls only. A time with no quiet call
  is marked †.
* **What the capture's time covers.** The whole ``capture(...)`` call: tokenising, building
  the mask and display tokens included, because that is what a user waits for. The baselines'
  inputs are prepared before their timer starts.
* **Peak memory.** How far the process's resident memory rose during one call, measured in
  this process by :class:`common.PeakMemory`: the kernel's peak-RSS counter is reset before
  each call and read after it, with garbage collected and free heap returned to the OS first.
  That gives exact per-call peaks, so a subprocess per case (a fresh model load each, for
  cleaner ``getrusage`` peaks) buys nothing here. The table shows the largest peak of the timed
  rounds. Every case's peak includes its logits (N × 49,152 floats, 0.4 GB at N = 2048).
* **Checks.** After the warm-up, the capture's ``input_ids`` and mask must equal the ones the
  baselines got, and the largest differences of the captured weights against eager
  ``output_attentions`` and of the plain against the eager logits are printed.

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/capture_cost.py   # about 3 minutes on a quiet 2-core machine
    PYTHONPATH=. .venv/bin/python benchmarks/capture_cost.py --sizes 128 512 --no-publish
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/capture_cost.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from attention_viz.capture import capture, encode, position_ids_for, run_forward
from attention_viz.hooks import ATTENTION_NAME
from attention_viz.loading import LoadedModel, load_model
from attention_viz.policy import MaskPolicy
from benchmarks.common import (
    OtherLoad,
    PeakMemory,
    describe_machine,
    finish,
    markdown_table,
    wait_for_quiet,
)

SECTION = "capture-cost"  # README section and benchmarks/out/ file name
POLICY_SECTION = "capture-cost-policies"  # the per-policy table's own section
MODEL = "smollm2"
SIZES = (128, 512, 1024, 2048)
TARGET_RATIO = 1.25  # capture time / plain forward time, at TARGET_LENGTH tokens
TARGET_LENGTH = 2048
CASES = ("plain", "capture", "whole", "eager")
# "default" is the per-policy rows' second baseline: SDPA with the model's own mask.
IMPLEMENTATION = {
    "plain": "sdpa",
    "default": "sdpa",
    "capture": ATTENTION_NAME,
    "whole": ATTENTION_NAME,
    "eager": "eager",
}
PARAGRAPH = (
    "Attention lets every token of a sentence look at the other tokens and decide which of them "
    "matter for its own meaning. A causal language model may only look back, never ahead, so the "
    "mask it applies is a lower triangle. Padding adds another rule: nobody attends to a pad. "
    "The weights of one head form a square matrix, one row per query and one column per key, "
    "and every row sums to one."
)


@dataclass(frozen=True)
class Inputs:
    """One input of exactly N tokens, as the capture and both baselines receive it."""

    length: int
    text: str
    input_ids: torch.Tensor  # (1, N)
    attention_mask: torch.Tensor  # (1, N) all ones: nothing is padded
    position_ids: torch.Tensor  # (1, N)
    mask: torch.Tensor  # (1, 1, N, N) bool, True = may attend: the capture's own mask
    additive_mask: torch.Tensor  # (1, 1, N, N) float32, 0 = attend, finfo.min = masked: for eager


@dataclass(frozen=True)
class Sample:
    """One timed call."""

    seconds: float
    peak_mb: float  # largest increase of resident memory during the call
    other_cores: float | None  # cores other processes kept busy meanwhile; None = unknown

    def quiet(self, max_other_cores: float) -> bool:
        return self.other_cores is None or self.other_cores <= max_other_cores


@dataclass
class Timings:
    """The samples of each case at one N; times come from the quiet ones where there are any."""

    max_other_cores: float  # a sample is quiet when other processes used at most this many cores
    samples: dict[str, list[Sample]] = field(default_factory=lambda: {case: [] for case in IMPLEMENTATION})
    discarded: list[Sample] = field(default_factory=list)  # calls re-run because others were busy
    waited: float = 0.0  # seconds spent waiting for other processes to quieten down
    checks: str = ""

    def counted(self, case: str) -> list[Sample]:
        """The quiet samples, or all of them when none was quiet (see :meth:`contended`)."""
        quiet = [sample for sample in self.samples[case] if sample.quiet(self.max_other_cores)]
        return quiet or self.samples[case]

    def contended(self, case: str) -> bool:
        """True when no sample of ``case`` was quiet, so its time is inflated by other processes."""
        return not any(sample.quiet(self.max_other_cores) for sample in self.samples[case])

    def median(self, case: str) -> float:
        return statistics.median(sample.seconds for sample in self.counted(case))

    def ratio(self, case: str) -> float:
        return self.median(case) / self.median("plain")

    def peak_mb(self, case: str) -> float:
        return max(sample.peak_mb for sample in self.samples[case])


def long_text(tokenizer, tokens: int) -> str:
    """An English text of more than ``tokens`` tokens, so truncation leaves exactly ``tokens``."""
    per_paragraph = len(tokenizer(PARAGRAPH)["input_ids"])
    return " ".join([PARAGRAPH] * (math.ceil(tokens / per_paragraph) + 1))


def prepare(model: LoadedModel, length: int) -> Inputs:
    """Tokens, positions and masks exactly as ``capture(model, text, policy=MaskPolicy(max_length=length))`` makes them."""
    text = long_text(model.tokenizer, length)
    policy = MaskPolicy(max_length=length).for_model(model.decoder)  # as capture() resolves it
    encoded = encode(model, [text], policy)
    real = int(encoded.attention_mask.sum())
    assert real == length, f"expected {length} real tokens and no padding, got {real}"
    mask = policy.build(encoded.attention_mask, encoded.documents)  # (1, 1, N, N)
    # Eager attention adds its mask to the scores: finfo.min, as transformers' eager_mask uses,
    # keeps the softmax finite (no row here is fully masked, so -inf would give the same result).
    additive = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    return Inputs(
        length=length,
        text=text,
        input_ids=encoded.input_ids,
        attention_mask=encoded.attention_mask,
        position_ids=position_ids_for(encoded, policy, model.decoder),
        mask=mask,
        additive_mask=additive,
    )


def calls(model: LoadedModel, inputs: Inputs, layer: int, plain_mask: str) -> dict[str, Callable]:
    """The four measured calls, each returning its full result."""
    forward = model.model
    shared = {"input_ids": inputs.input_ids, "position_ids": inputs.position_ids, "use_cache": False}
    plain_attention_mask = inputs.mask if plain_mask == "4d" else inputs.attention_mask
    policy = MaskPolicy(max_length=inputs.length).for_model(model.decoder)  # as capture() resolves it
    encoded = encode(model, [inputs.text], policy)
    return {
        "plain": lambda: forward(**shared, attention_mask=plain_attention_mask),
        "capture": lambda: capture(
            model, inputs.text, layers=[layer], policy=MaskPolicy(max_length=inputs.length), effect=False
        ),
        "whole": lambda: run_forward(model, encoded, policy, [layer]),
        "eager": lambda: forward(**shared, attention_mask=inputs.additive_mask, output_attentions=True),
    }


@contextlib.contextmanager
def attention_implementation(model: LoadedModel, name: str) -> Iterator[None]:
    """Run the block with transformers' attention ``name``, then restore the capturing one."""
    model.model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.model.set_attn_implementation(ATTENTION_NAME)


def measure(
    model: LoadedModel, case: str, call: Callable, keep: Callable | None = None
) -> tuple[Sample, object]:
    """Time one call, its peak memory increase and others' load; ``keep`` picks what to return.

    Returns ``(sample, kept)``; the rest of the call's result is freed first.
    """
    with attention_implementation(model, IMPLEMENTATION[case]), PeakMemory() as memory:
        with OtherLoad() as load:
            start = time.perf_counter()
            with torch.inference_mode():
                result = call()
            seconds = time.perf_counter() - start
        kept = keep(result) if keep else None
        del result
    return Sample(seconds, memory.peak_mb, load.cores), kept


def measure_quietly(
    model: LoadedModel, case: str, call: Callable, timings: Timings, options: argparse.Namespace
) -> Sample:
    """Wait for other processes to quieten down, measure, and re-run a call they disturbed.

    At most ``options.retries`` re-runs; the last sample is kept, quiet or not, and the
    discarded ones go to ``timings.discarded``.
    """
    for attempt in range(options.retries + 1):
        timings.waited += wait_for_quiet(options.max_other_load, timeout=options.max_wait)
        sample, _ = measure(model, case, call)
        if sample.quiet(options.max_other_load) or attempt == options.retries:
            break
        timings.discarded.append(sample)
    timings.samples[case].append(sample)
    return sample


def check(inputs: Inputs, layer: int, kept: dict[str, dict]) -> str:
    """Confirm the four cases saw the same input; say how closely their results agree."""
    captured = kept["capture"]
    if not torch.equal(captured["input_ids"], inputs.input_ids) or not torch.equal(
        captured["mask"], inputs.mask
    ):
        raise AssertionError(f"At N = {inputs.length} the capture saw other inputs than the baselines.")
    weights = (captured["weights"] - kept["eager"]["weights"]).abs().max().item()
    if not torch.equal(kept["whole"]["weights"], captured["weights"]):
        raise AssertionError(f"At N = {inputs.length} the whole-forward capture recorded other weights.")
    logits = (kept["plain"]["logits"] - kept["eager"]["logits"]).abs().max().item()
    whole = (kept["whole"]["logits"] - kept["plain"]["logits"]).abs().max().item()
    return (
        f"N = {inputs.length}: max |Δ| layer {layer} weights {weights:.1e}, logits plain vs eager "
        f"{logits:.1e}, whole-forward capture vs plain {whole:.1e}"
    )


def run_length(model: LoadedModel, length: int, layer: int, options: argparse.Namespace) -> Timings:
    """One warm-up round (used for the checks), then the timed rounds, in rotating order."""
    repeats = options.long_repeats if length >= TARGET_LENGTH else options.repeats
    print(f"N = {length}: warm-up and {repeats} timed rounds", flush=True)
    inputs = prepare(model, length)
    measured = calls(model, inputs, layer, options.plain_mask)
    keepers = {
        "plain": lambda out: {"logits": out.logits},
        "capture": lambda out: {
            "input_ids": out.input_ids,
            "mask": out.mask,
            "weights": out.layer(layer).weights,
        },
        "whole": lambda out: {"logits": out[3], "weights": out[2][layer].trace.weights},
        "eager": lambda out: {"logits": out.logits, "weights": out.attentions[layer]},
    }
    kept = {case: measure(model, case, measured[case], keepers[case])[1] for case in CASES}
    timings = Timings(max_other_cores=options.max_other_load, checks=check(inputs, layer, kept))
    del kept
    for round_index in range(repeats):
        shift = round_index % len(CASES)
        notes = []
        for case in CASES[shift:] + CASES[:shift]:
            discarded = len(timings.discarded)
            sample = measure_quietly(model, case, measured[case], timings, options)
            others = "" if sample.other_cores is None else f", others {sample.other_cores:.1f} cores"
            rerun = len(timings.discarded) - discarded
            notes.append(f"{case} {sample.seconds:.2f} s ({sample.peak_mb:.0f} MB{others}, {rerun} re-runs)")
        print(f"  N={length} round {round_index + 1}/{repeats}: " + ", ".join(notes), flush=True)
    return timings


# The prefix-LM, sink, chunk and packing policies, each captured at N = TARGET_LENGTH against the plain forward of the
# same tokens. Packed rows hold PACKED_TEXTS texts of TARGET_LENGTH / PACKED_TEXTS tokens each.
PACKED_TEXTS = 4
POLICIES = {
    "prefix-LM, prefix 256": MaskPolicy(prefix=256),
    "sinks 4 + window 256": MaskPolicy(window=256, sinks=4),
    "chunks of 256": MaskPolicy(chunk=256),
    f"{PACKED_TEXTS} packed texts, document mask + position reset": MaskPolicy(pack=True),
    f"{PACKED_TEXTS} packed texts, no document mask": MaskPolicy(pack=True, document_mask=False),
    f"{PACKED_TEXTS} packed texts, no position reset": MaskPolicy(pack=True, reset_positions=False),
}
POLICY_CASES = ("plain", "default", "capture", "whole")


def policy_texts(model: LoadedModel, policy: MaskPolicy, length: int) -> list[str]:
    """Texts that make a row of exactly ``length`` real tokens under ``policy``."""
    if not policy.pack:
        return [long_text(model.tokenizer, length)]
    share = length // PACKED_TEXTS
    texts = []
    for index in range(PACKED_TEXTS):
        ids = model.tokenizer(long_text(model.tokenizer, share))["input_ids"]
        wanted = share if index < PACKED_TEXTS - 1 else length - share * (PACKED_TEXTS - 1)
        texts.append(model.tokenizer.decode(ids[:wanted]))
    return texts


def run_policy(model: LoadedModel, policy: MaskPolicy, layer: int, options: argparse.Namespace) -> Timings:
    """One policy at N = TARGET_LENGTH: the plain SDPA forward of the same row (2-D mask), the
    app's capture and the capture's whole forward; a warm-up, then the timed rounds."""
    resolved = policy.with_changes(max_length=TARGET_LENGTH).for_model(model.decoder)
    texts = policy_texts(model, resolved, TARGET_LENGTH)
    encoded = encode(model, texts, resolved)
    length = encoded.input_ids.shape[1]
    assert length == TARGET_LENGTH and bool(encoded.attention_mask.all()), f"row of {length} tokens"
    mask = resolved.build(encoded.attention_mask, encoded.documents)  # (1, 1, N, N)
    shared = {
        "input_ids": encoded.input_ids,
        "position_ids": position_ids_for(encoded, resolved, model.decoder),
        "use_cache": False,
    }
    measured = {
        # What training or serving with this mask runs: transformers' SDPA given the same 4-D mask.
        "plain": lambda: model.model(**shared, attention_mask=mask),
        # For scale: the model's own mask, which SDPA runs on its fastest path.
        "default": lambda: model.model(**shared, attention_mask=encoded.attention_mask),
        "capture": lambda: capture(model, texts, layers=[layer], policy=resolved, effect=False),
        "whole": lambda: run_forward(model, encoded, resolved, [layer]),
    }
    timings = Timings(max_other_cores=options.max_other_load)
    kept = {case: measure(model, case, measured[case], lambda out: out)[1] for case in POLICY_CASES}
    expected = mask
    if not torch.equal(kept["capture"].mask, expected):
        raise AssertionError(f"{resolved.describe()}: the capture applied another mask than the policy's.")
    timings.checks = f"{float((~expected).float().mean()):.0%} of cells masked"
    del kept
    for round_index in range(options.long_repeats):
        shift = round_index % len(POLICY_CASES)
        for case in POLICY_CASES[shift:] + POLICY_CASES[:shift]:
            measure_quietly(model, case, measured[case], timings, options)
    return timings


def policy_report(
    results: dict[str, Timings],
    layer: int,
    machine: dict[str, str],
    elapsed: float,
    options: argparse.Namespace,
) -> str:
    """The per-policy table: time and ratio to the plain forward of the same tokens."""
    headers = [
        "policy (N = 2048)",
        "cells masked",
        "SDPA forward, model's own mask (s)",
        "SDPA forward, this mask (s)",
        "capture 1 layer, as the app runs it (s)",
        "ratio",
        "capture 1 layer, whole forward (s)",
        "ratio",
        "target",
    ]
    rows = []
    for label, timings in results.items():
        mark = {case: "†" if timings.contended(case) else "" for case in POLICY_CASES}
        ratio = timings.ratio("whole")
        rows.append(
            [
                label,
                timings.checks.split(" ")[0],
                f"{timings.median('default'):.2f}{mark['default']}",
                f"{timings.median('plain'):.2f}{mark['plain']}",
                f"{timings.median('capture'):.2f}{mark['capture']}",
                f"{timings.ratio('capture'):.2f}×",
                f"{timings.median('whole'):.2f}{mark['whole']}",
                f"{ratio:.2f}×",
                "met" if ratio <= TARGET_RATIO else "missed",
            ]
        )
    return "\n".join(
        [
            f"The same capture of layer {layer} under each newer mask policy, at N = {TARGET_LENGTH} real tokens "
            "(packed: 4 texts of 512). Ratios are to the plain forward that applies the same mask: "
            "transformers' SDPA given the policy's 4-D mask, the same tokens and positions, as training "
            "or serving with that mask runs it. For scale, the SDPA forward with the model's own mask "
            "(the 2-D `attention_mask`, SDPA's fastest path). Each capture's mask was checked against "
            "`policy.build` cell for cell.",
            "",
            markdown_table(headers, rows),
            "",
            f"Target, the whole-forward capture ≤ {TARGET_RATIO}× the forward with the same mask, for every policy: "
            f"**{'met' if all(t.ratio('whole') <= TARGET_RATIO for t in results.values()) else 'missed'}**. "
            f"Median of {options.long_repeats} rounds after a warm-up; † marks a time that other processes disturbed.",
            "",
            contention(results, options, POLICY_CASES),
            "- Machine: " + "; ".join(f"{key} {value}" for key, value in machine.items()) + ".",
            f"- Measured by `benchmarks/capture_cost.py` in {elapsed:.0f} s (with the table above, unless run with `--policies-only`).",
        ]
    )


def verdict(results: dict[int, Timings]) -> str:
    if TARGET_LENGTH not in results:
        return f"not measured (N = {TARGET_LENGTH} was not run)"
    timings = results[TARGET_LENGTH]
    ratio = timings.ratio("whole")
    doubt = (
        "; unreliable, other processes disturbed every call of one side (†): run again"
        if timings.contended("plain") or timings.contended("whole")
        else ""
    )
    return (
        f"**{'met' if ratio <= TARGET_RATIO else 'missed'}** (whole forward {ratio:.2f}×{doubt}; "
        f"the app's capture, which stops after the layer, {timings.ratio('capture'):.2f}×)"
    )


def contention(results: dict, options: argparse.Namespace, cases: tuple[str, ...] = CASES) -> str:
    """How busy other processes kept the machine, and how many calls were re-run for it."""
    samples = [sample for timings in results.values() for case in cases for sample in timings.samples[case]]
    loads = [sample.other_cores for sample in samples if sample.other_cores is not None]
    if not loads:
        return "- Load from other processes: not measured (no /proc/stat); nothing was re-run."
    quiet = sum(sample.quiet(options.max_other_load) for sample in samples)
    discarded = sum(len(timings.discarded) for timings in results.values())
    waited = sum(timings.waited for timings in results.values())
    return (
        "- Other processes: torch spreads each call over every core, so load from other processes "
        "slows a call by far more than its share. Each call waited (up to "
        f"{options.max_wait:g} s) until others used at most {options.max_other_load} cores, and a "
        f"call they still disturbed was re-run (up to {options.retries} times). {quiet} of "
        f"{len(samples)} timed calls were quiet, {discarded} re-run, {waited:.0f} s spent "
        "waiting; times are medians of the quiet calls. † marks a time with no quiet call, "
        "inflated by other processes."
    )


def report(
    results: dict[int, Timings],
    layer: int,
    model: LoadedModel,
    options: argparse.Namespace,
    machine: dict[str, str],
    elapsed: float,
) -> str:
    """The markdown section: table, target verdict, method, checks and machine."""
    headers = [
        "N",
        "plain SDPA forward (s)",
        "capture 1 layer, as the app runs it (s)",
        "ratio",
        "capture 1 layer, whole forward (s)",
        "ratio",
        "output_attentions eager (s)",
        "ratio",
        "peak MB plain",
        "peak MB capture",
        "peak MB whole",
        "peak MB eager",
    ]

    def seconds(timings: Timings, case: str) -> str:
        mark = "†" if timings.contended(case) else ""
        return f"{timings.median(case):.2f}{mark}"

    rows = [
        [
            length,
            seconds(timings, "plain"),
            seconds(timings, "capture"),
            f"{timings.ratio('capture'):.2f}×",
            seconds(timings, "whole"),
            f"{timings.ratio('whole'):.2f}×",
            seconds(timings, "eager"),
            f"{timings.ratio('eager'):.2f}×",
            *(f"{timings.peak_mb(case):.0f}" for case in CASES),
        ]
        for length, timings in sorted(results.items())
    ]
    plain_mask = (
        "the capture's 4-D boolean mask (`policy.build`)"
        if options.plain_mask == "4d"
        else "the 2-D `attention_mask` (transformers builds the mask)"
    )
    repeats = f"{options.repeats} rounds" + (
        f" ({options.long_repeats} from N = {TARGET_LENGTH})"
        if options.long_repeats != options.repeats
        else ""
    )
    lines = [
        f"Capturing layer {layer} of {model.name} ({model.num_layers} layers, {model.num_heads} heads) "
        f"with `capture(..., layers=[{layer}], policy=MaskPolicy(max_length=N), effect=False)`, against the same model "
        "and input with transformers' `sdpa` attention, and with `eager` attention and "
        f"`output_attentions=True`. Median of {repeats} after a warm-up; ratio = time / plain "
        "forward; peak MB = largest increase of resident memory during one call. Made by "
        "`benchmarks/capture_cost.py`.",
        "",
        markdown_table(headers, rows),
        "",
        f"Target, capture ≤ {TARGET_RATIO}× the plain forward at N = {TARGET_LENGTH}: {verdict(results)}.",
        "",
        f"- Plain forward mask: {plain_mask}. Eager: the same boolean mask as 0 / finfo(float32).min.",
        "- Capture time covers the whole `capture()` call (tokenising and display tokens included); it "
        f"ends the forward after layer {layer}. The whole-forward case is the capture's own forward "
        "(`run_forward`, inputs prepared beforehand) recording the same layer and running to the logits.",
        "- Checks (same input ids and mask for every case, the same recorded weights in both captures): "
        + "; ".join(timings.checks for _, timings in sorted(results.items()))
        + ".",
        contention(results, options),
        "- Machine: " + "; ".join(f"{key} {value}" for key, value in machine.items()) + ".",
        f"- The whole benchmark took {elapsed:.0f} s, model load included.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="sequence lengths N")
    parser.add_argument("--layer", type=int, default=None, help="layer to capture (default: the middle one)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per N below 2048")
    parser.add_argument("--long-repeats", type=int, default=3, help=f"timed rounds from N = {TARGET_LENGTH}")
    parser.add_argument(
        "--plain-mask", choices=("4d", "2d"), default="2d", help="mask given to the plain SDPA forward"
    )
    parser.add_argument(
        "--max-other-load",
        type=float,
        default=0.3,
        help="re-run a call during which other processes used more cores than this",
    )
    parser.add_argument("--retries", type=int, default=2, help="re-runs allowed per call")
    parser.add_argument(
        "--max-wait", type=float, default=10.0, help="seconds to wait for a quiet machine before each call"
    )
    parser.add_argument("--no-publish", action="store_true", help="print only; write no files")
    parser.add_argument("--no-policies", action="store_true", help="skip the per-policy table at N = 2048")
    parser.add_argument(
        "--policies-only", action="store_true", help="only the per-policy table (its own README section)"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.long_repeats < 1 or args.retries < 0:
        parser.error("--repeats and --long-repeats must be at least 1, --retries at least 0.")
    return args


def main(argv: list[str] | None = None) -> dict[int, Timings]:
    args = parse_args(argv)
    started = time.perf_counter()
    machine = describe_machine()  # before the run, so the load average is the machine's own
    model = load_model(MODEL, progress=lambda message: print(message, flush=True))
    layer = model.num_layers // 2 if args.layer is None else model.check_layers([args.layer])[0]
    results = {}
    if not args.policies_only:
        for length in sorted(args.sizes):
            results[length] = run_length(model, length, layer, args)
        body = report(results, layer, model, args, machine, time.perf_counter() - started)
        finish(SECTION, body, args.no_publish)
    if not args.no_policies:
        policies = {}
        for label, policy in POLICIES.items():
            print(f"{label}: warm-up and {args.long_repeats} timed rounds at N = {TARGET_LENGTH}", flush=True)
            policies[label] = run_policy(model, policy, layer, args)
        body = policy_report(policies, layer, machine, time.perf_counter() - started, args)
        finish(POLICY_SECTION, body, args.no_publish)
    return results


if __name__ == "__main__":
    main()
