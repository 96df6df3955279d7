"""Files the explorer's download buttons build when they are pressed.

A download button keeps its data callable for as long as the tab is open. A lambda written in a
page would keep the page's whole namespace alive with it (a function holds its module's
globals), captures included: about 300 MB per open tab at 2048 tokens. These functions live
here instead and are bound to the *request* (model, texts, layers, policy) with
``functools.partial``; a press fetches the capture from the shared cache.

A press runs outside the page's run (in a server thread), so it does not see the run's language:
a file with words in it takes the language as an argument, bound in the same ``partial``
(``lang=attention_viz.i18n.get_language()``). The data files (CSV, NPZ) keep English column
names, so scripts read them the same way whatever language made them.
"""

from __future__ import annotations

from attention_viz.export import statistics_csv, to_csv, to_npz
from attention_viz.figures import FigureStyle
from attention_viz.i18n import DEFAULT_LANGUAGE, language
from attention_viz.policy import MaskPolicy
from attention_viz.render import layer_figure, standalone_html
from ui import cache

Request = tuple[str, tuple[str, ...], tuple[int, ...], MaskPolicy]


def weights_csv(model_name: str, texts: tuple[str, ...], layers: tuple[int, ...], policy: MaskPolicy) -> str:
    """The captured weights as CSV (one row per item, layer, head, query and key)."""
    return to_csv(cache.capture(model_name, texts, layers, policy))


def weights_npz(
    model_name: str, texts: tuple[str, ...], layers: tuple[int, ...], policy: MaskPolicy
) -> bytes:
    """The captured weights and scores as a compressed NPZ, with the settings."""
    return to_npz(cache.capture(model_name, texts, layers, policy))


def head_statistics_csv(
    model_name: str, texts: tuple[str, ...], layers: tuple[int, ...], policy: MaskPolicy
) -> str:
    """Per-head statistics of the captured layers as CSV."""
    return statistics_csv(cache.capture(model_name, texts, layers, policy))


def layer_html(
    model_name: str,
    texts: tuple[str, ...],
    layers: tuple[int, ...],
    policy: MaskPolicy,
    item: int,
    style: FigureStyle,
    lang: str = DEFAULT_LANGUAGE,
) -> str:
    """Every head of the first captured layer for one text, as an HTML file that works offline,
    its titles and hover text in ``lang``."""
    result = cache.capture(model_name, texts, layers, policy)
    with language(lang):
        return standalone_html(layer_figure(result, layers[0], item, style))
