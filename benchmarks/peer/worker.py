"""bertviz's side of benchmarks/peer_bertviz.py: run inside the peer environment, never in .venv.

Reads one JSON request per line on stdin and answers one JSON line on stdout, like a notebook
kernel that keeps its models loaded between cells. A request::

    {"folder": ".../model", "decoder": false, "text": "...", "length": 64, "out": "/tmp/page.html",
     "replace": {"https://cdn.../d3.min": "/node_modules/d3/dist/d3.min"}}

runs the model on ``text`` cut to ``length`` tokens with ``output_attentions=True`` (timed:
``forward_s``), calls ``bertviz.head_view(attention, tokens, html_action="return")`` as its
README shows (timed: ``html_s``), and writes the HTML as a page (untimed) to ``out``, with each
address in ``replace`` (the CDN's) swapped for a local one. A failure is answered with
``{"error": "..."}`` and the worker goes on.
"""

from __future__ import annotations

import gc
import json
import sys
import time
import traceback
from importlib.metadata import version

import torch
from bertviz import head_view
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

MODELS: dict[str, tuple[object, object]] = {}
# head_view's HTML is a fragment for a notebook cell; a browser tab needs a document around it.
PAGE_START = (
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>bertviz head_view</title></head><body>\n'
)
PAGE_END = "\n</body></html>\n"
PARAMS = "const params = "  # the weights follow this in head_view's script; every CDN address comes before
CHUNK = 1 << 24  # write a page of gigabytes without another copy of it


def loaded(folder: str, decoder: bool) -> tuple[object, object]:
    """The model and tokenizer in ``folder``, loaded once; eager attention so weights are returned."""
    if folder not in MODELS:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        # A decoder's folder may keep its tied embedding under lm_head only: AutoModel would drop it.
        loader = AutoModelForCausalLM if decoder else AutoModel
        # SDPA returns no weights; bertviz's README asks for output_attentions=True, which needs eager.
        model = loader.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32)
        MODELS[folder] = (model.eval(), tokenizer)
    return MODELS[folder]


def write_page(fragment: str, out: str, replace: dict[str, str]) -> None:
    """``fragment`` as a whole HTML page in ``out``, each address in ``replace`` swapped exactly once."""
    cut = fragment.index(PARAMS)
    head = fragment[:cut]
    for old, new in replace.items():
        if head.count(old) != 1:
            raise ValueError(
                f"head_view's page names {old!r} {head.count(old)} times, not once: bertviz changed."
            )
        head = head.replace(old, new)
    with open(out, "w", encoding="utf-8") as sink:
        sink.write(PAGE_START + head)
        for start in range(cut, len(fragment), CHUNK):
            sink.write(fragment[start : start + CHUNK])
        sink.write(PAGE_END)


def serve(request: dict) -> dict:
    model, tokenizer = loaded(request["folder"], request["decoder"])
    encoded = tokenizer(request["text"], truncation=True, max_length=request["length"], return_tensors="pt")
    started = time.perf_counter()
    with torch.inference_mode():
        outputs = model(**encoded, output_attentions=True)
    forward_s = time.perf_counter() - started
    attention = outputs.attentions  # one (1, H, T, T) tensor per layer
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0])
    started = time.perf_counter()
    page = head_view(attention, tokens, html_action="return")
    html_s = time.perf_counter() - started
    write_page(page.data, request["out"], request.get("replace", {}))
    return {
        "forward_s": forward_s,
        "html_s": html_s,
        "tokens": len(tokens),
        "layers": len(attention),
        "heads": int(attention[0].shape[1]),
        "chars": len(page.data),
    }


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else torch.get_num_threads())
    answers, sys.stdout = sys.stdout, sys.stderr  # stray prints of the libraries must not reach the driver
    versions = {name: version(name) for name in ("bertviz", "torch", "transformers")}
    print(json.dumps(versions), file=answers, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = serve(json.loads(line))
        except Exception as error:  # noqa: BLE001 (any failure is reported to the driver, which goes on)
            answer = {"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()[-2000:]}
        print(json.dumps(answer), file=answers, flush=True)
        gc.collect()  # the lists and JSON of a long page are gigabytes: free them before the next


if __name__ == "__main__":
    main()
