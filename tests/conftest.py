"""Shared fixtures: tiny random-weight video LLMs (built once per session) and small synthetic videos.

The models are shared between tests; every test that attaches something must leave them as they were (which is
itself what the adapter tests check).
"""

from __future__ import annotations

import functools

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    # the CI box has 2 shared cores; one thread per test process avoids oversubscription
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@functools.cache
def _tiny(arch: str, text_layers: int):
    from vidcom2.testing import tiny

    return tiny.build(arch, text_layers=text_layers, seed=0)


@pytest.fixture(scope="session")
def tiny_model():
    """``tiny_model(arch, text_layers=4) -> (model, processor)``, cached for the session."""

    def get(arch: str, text_layers: int = 4):
        return _tiny(arch, text_layers)

    return get
