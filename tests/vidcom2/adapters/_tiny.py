"""Tiny model + one 4-frame video prompt per architecture, built lazily and cached per test module."""

from __future__ import annotations

from vidcom2.testing import tiny


def model_batches(seed: int, question: str, text_layers: int = 4):
    """``get(arch, text_layers=...) -> (model, batch)``: a fresh tiny model (not the session-shared one, so module
    tests may attach things freely) and the processor outputs for a 4-frame 112x140 video."""
    cache = {}

    def get(arch: str, text_layers: int = text_layers):
        key = (arch, text_layers)
        if key not in cache:
            model, proc = tiny.build(arch, text_layers=text_layers)
            batch = dict(tiny.inputs(arch, proc, tiny.make_video(4, 112, 140, seed=seed), question))
            cache[key] = (model, batch)
        return cache[key]

    return get
