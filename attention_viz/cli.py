"""Command line: ``python -m attention_viz capture|heads|render ...``.

Every failure the user can fix prints one line on stderr and exits with status 2; no tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from attention_viz.errors import UserFacingError

EXIT_USAGE = 2


def _layers(text: str) -> list[int]:
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise argparse.ArgumentTypeError(f"name at least one layer, e.g. 0 or 0,5; got {text!r}")
    if not all(parts):
        # "1,,2" or "0,": a layer was probably left out, so do not guess which were meant.
        raise argparse.ArgumentTypeError(
            f"layers must be comma-separated whole numbers with none missing, e.g. 0,5; got {text!r}"
        )
    try:
        return [int(part) for part in parts]
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"layers must be comma-separated whole numbers, got {text!r}"
        ) from error


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from error
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _add_capture_options(parser: argparse.ArgumentParser, layers_required: bool) -> None:
    parser.add_argument(
        "--model", default="smollm2", help="smollm2 (default), minilm, or an allowlisted model"
    )
    parser.add_argument("--text", action="append", required=True, help="input text; repeat for a batch")
    parser.add_argument("--layers", type=_layers, required=layers_required, help="zero-based, e.g. 0,5")
    parser.add_argument(
        "--no-causal", dest="causal", action="store_false", default=None, help="turn the causal mask off"
    )
    parser.add_argument(
        "--causal", dest="causal", action="store_true", help="impose a causal mask (encoders)"
    )
    parser.add_argument("--no-padding-mask", dest="padding_mask", action="store_false", default=True)
    parser.add_argument("--padding-side", choices=("left", "right"), default="right")
    parser.add_argument("--window", type=_positive, default=None, help="sliding-window width")
    parser.add_argument("--max-length", type=_positive, default=None, help="truncate or pad to N tokens")
    masks = parser.add_argument_group("more masks")
    masks.add_argument(
        "--prefix",
        type=_positive,
        default=None,
        metavar="P",
        help="prefix-LM: the first P tokens of each text see each other both ways (needs the causal mask)",
    )
    masks.add_argument(
        "--sinks",
        type=_positive,
        default=None,
        metavar="S",
        help="attention sinks: the first S tokens stay visible beside --window (StreamingLLM)",
    )
    masks.add_argument(
        "--chunk",
        type=_positive,
        default=None,
        metavar="C",
        help="chunked attention: only within chunks of C tokens (causal within them if causal)",
    )
    masks.add_argument(
        "--pack", action="store_true", help="pack every --text into one row, one after another"
    )
    masks.add_argument(
        "--no-document-mask",
        dest="document_mask",
        action="store_false",
        help="with --pack: let tokens attend across documents (cross-document contamination)",
    )
    masks.add_argument(
        "--no-position-reset",
        dest="reset_positions",
        action="store_false",
        help="with --pack: positions run on across the row instead of restarting per document",
    )


def policy_from_args(args: argparse.Namespace):
    """The :class:`MaskPolicy` the flags ask for; an impossible combination is one clear line."""
    from attention_viz.policy import MaskPolicy

    if not args.pack and not (args.document_mask and args.reset_positions):
        flag = "--no-document-mask" if not args.document_mask else "--no-position-reset"
        raise UserFacingError(f"{flag} applies to packed texts: add --pack.")
    if args.sinks is not None and args.window is None:
        raise UserFacingError("--sinks keeps the first tokens visible beside a sliding window: add --window.")
    try:
        return MaskPolicy(
            causal=args.causal,
            padding_mask=args.padding_mask,
            padding_side=args.padding_side,
            window=args.window,
            max_length=args.max_length,
            prefix=args.prefix,
            sinks=args.sinks,
            chunk=args.chunk,
            pack=args.pack,
            document_mask=args.document_mask,
            reset_positions=args.reset_positions,
        )
    except ValueError as error:
        raise UserFacingError(str(error)) from error


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake prints one line like every other error (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    # Sub-command parsers are made with the same class, so their mistakes are one line too.
    parser = OneLineParser(prog="python -m attention_viz", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    capture_parser = commands.add_parser("capture", help="capture attention and write .json, .npz or .csv")
    _add_capture_options(capture_parser, layers_required=True)
    capture_parser.add_argument("--out", required=True, help="output file: .json, .npz or .csv")
    heads_parser = commands.add_parser("heads", help="print per-head statistics as CSV")
    _add_capture_options(heads_parser, layers_required=False)
    render_parser = commands.add_parser("render", help="draw all heads of one layer to .html or .png")
    _add_capture_options(render_parser, layers_required=False)
    render_parser.add_argument("--layer", type=int, required=True, help="zero-based layer")
    render_parser.add_argument("--item", type=int, default=0, help="which text of the batch to draw")
    render_parser.add_argument("--out", required=True, help="fig.html (self-contained) or fig.png")
    render_parser.add_argument(
        "--lang",
        choices=("en", "zh"),
        default="en",
        help="language of the figure's titles and hover text: en (default) or zh (Simplified Chinese)",
    )
    return parser


def _capture(args: argparse.Namespace, layers: list[int] | None):
    from attention_viz.capture import capture
    from attention_viz.loading import load_model, needs_conversion

    if not args.text or any(not text.strip() for text in args.text):
        raise UserFacingError("The text is empty. Give --text a sentence or two.")
    policy = policy_from_args(args)  # before loading: a bad combination fails fast
    if needs_conversion(args.model):
        print("Converting the bundled model (about 20 s, only the first time)…", file=sys.stderr)
    model = load_model(args.model)
    if policy.prefix is not None and policy.causal is None and not model.decoder:
        raise UserFacingError(f"--prefix needs the causal mask and {model.name} is an encoder: add --causal.")
    result = capture(model, args.text, layers=layers, policy=policy, effect=False)
    limit = (
        f"--max-length {args.max_length}"
        if args.max_length is not None and args.max_length < model.max_positions
        else f"{model.name}'s limit of {model.max_positions} tokens"
    )
    for text, cut in zip(result.texts, result.truncated, strict=True):
        if cut:
            shown = repr(text[:30]) + ("…" if len(text) > 30 else "")
            print(f"notice: {cut} tokens of {shown} were cut to fit {limit}.", file=sys.stderr)
    return model, result


def run(args: argparse.Namespace) -> None:
    if args.command == "capture":
        from attention_viz.export import FORMATS, write

        if not args.out.lower().endswith(FORMATS):
            raise UserFacingError(f"--out must end in {', '.join(FORMATS)}, got {args.out!r}.")
        _, result = _capture(args, args.layers)
        write(result, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    elif args.command == "heads":
        from attention_viz.stats import head_statistics

        _, result = _capture(args, args.layers)
        sys.stdout.write(head_statistics(result).to_csv(index=False, float_format="%.6f"))
    elif args.command == "render":
        from attention_viz.i18n import language
        from attention_viz.render import render_layer

        if not args.out.lower().endswith((".html", ".png")):
            raise UserFacingError(f"--out must end in .html or .png, got {args.out!r}.")
        model, result = _capture(args, [args.layer])
        with language(args.lang):
            render_layer(result, args.layer, args.item, args.out)
        print(f"wrote {args.out}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = build_parser().parse_args(argv)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    # One line per failure: transformers' warnings (a model's config checks) stay out of stderr.
    # (TRANSFORMERS_VERBOSITY above is read when transformers is imported, which may be earlier.)
    transformers_logging.set_verbosity_error()
    try:
        run(args)
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        print(
            f"error: {error.strerror or error}: {getattr(error, 'filename', '') or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return EXIT_USAGE
    return 0
