"""A short text's forward runs on one thread, a long one on every core, with the same weights."""

import threading

import torch

from attention_viz import threads
from attention_viz.capture import capture
from attention_viz.policy import MaskPolicy

EVERY_CORE = threads.threads_for(threads.ONE_THREAD_MAX_TOKENS + 1)  # the process's default


def _threads_seen(model, texts):
    """The thread count torch used inside ``model``'s forward, and the capture."""
    seen = []
    handle = model.model.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    try:
        result = capture(model, texts, [0, 5], MaskPolicy(), effect=False)
    finally:
        handle.remove()
    return seen, result


def test_short_text_runs_on_one_thread_then_the_default_is_back(minilm):
    seen, result = _threads_seen(minilm, ["The cat sat on the mat.", "A dog barked."])
    assert result.input_ids.numel() <= threads.ONE_THREAD_MAX_TOKENS
    assert seen == [1]
    assert torch.get_num_threads() == EVERY_CORE


def test_long_text_keeps_every_core(minilm):
    long_text = " ".join(["the river keeps moving past the old mill"] * 12)
    seen, result = _threads_seen(minilm, [long_text])
    assert result.input_ids.numel() > threads.ONE_THREAD_MAX_TOKENS
    assert seen == [EVERY_CORE]
    assert torch.get_num_threads() == EVERY_CORE


def test_a_thread_started_after_a_short_forward_starts_from_the_default(minilm):
    """torch starts a new thread (Streamlit's next script run) from the count set last by any thread."""
    capture(minilm, ["Short."], [0], MaskPolicy(), effect=False)
    counts = []
    worker = threading.Thread(target=lambda: counts.append(torch.get_num_threads()))
    worker.start()
    worker.join()
    assert counts == [EVERY_CORE]


def test_one_thread_gives_the_weights_of_every_core(minilm, monkeypatch):
    texts = ["The cat sat on the mat because it was warm.", "Short one."]
    one_thread = capture(minilm, texts, None, MaskPolicy(), effect=False)
    monkeypatch.setattr(threads, "ONE_THREAD_MAX_TOKENS", 0)
    every_core = capture(minilm, texts, None, MaskPolicy(), effect=False)
    for layer, captured in one_thread.layers.items():
        torch.testing.assert_close(captured.weights, every_core.layers[layer].weights, atol=1e-6, rtol=0)
