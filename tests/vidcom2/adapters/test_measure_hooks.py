"""vidcom2.measure (Recorder -> SampleStats) and vidcom2.hooks (scoped instance attributes and forward hooks)."""

from __future__ import annotations

import pytest
import torch

from vidcom2.hooks import forward_hooks, instance_attr, scoped_item
from vidcom2.measure import Recorder, SampleStats

BASE = [
    dict(visual_tokens_in=10, visual_tokens_out=3, prompt_tokens_in=20, prompt_tokens_out=13, new_tokens=2),
    dict(visual_tokens_in=8, visual_tokens_out=2, prompt_tokens_in=15, prompt_tokens_out=9, new_tokens=4),
]


def test_disabled_recorder_keeps_counts_and_no_times():
    rec = Recorder(enabled=False)
    with rec.timer("vision_encoder"):
        pass
    assert rec.mark() is None and rec.times == {}
    rows = rec.rows(BASE)
    assert [r.visual_tokens_out for r in rows] == [3, 2]
    assert rows[0].visual_tokens_layer_avg == 3.0  # pre-LLM: the same count in every layer
    assert (rows[1].vision_encoder_s, rows[1].prefill_s, rows[1].decode_s) == (None, None, None)


def test_enabled_recorder_times_and_noted_fields():
    rec = Recorder(enabled=True, device=torch.device("cpu"))
    with rec.timer("compression"):
        sum(range(10000))
    with rec.timer("compression"):  # re-entering adds up
        pass
    rec.note(visual_tokens_layer_avg=[5.5, 1.25], visual_tokens_out=7)
    rows = rec.rows(BASE)
    assert rows[0].compression_s > 0 and rows[0].compression_s == rows[1].compression_s
    assert (rows[0].visual_tokens_layer_avg, rows[1].visual_tokens_layer_avg) == (5.5, 1.25)
    assert rows[0].visual_tokens_out == rows[1].visual_tokens_out == 7
    assert isinstance(rows[0], SampleStats) and set(rows[0].to_dict()) >= {"prefill_s", "new_tokens"}
    with pytest.raises(KeyError, match="visual_tokens"):
        rec.note(visual_tokens=1)


def test_instance_attr_restores_previous_state_also_on_error():
    layer = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError):
        with instance_attr(layer, "forward", lambda x: x):
            assert layer(torch.ones(1, 2)).tolist() == [[1.0, 1.0]]
            raise ValueError
    assert "forward" not in layer.__dict__
    marker = object()
    layer.__dict__["extra"] = marker
    with instance_attr(layer, "extra", 1):
        assert layer.extra == 1
    assert layer.extra is marker
    assert type(layer).forward is torch.nn.Linear.forward  # the class is never touched


def test_scoped_item_restores_a_mapping_key_also_on_error():
    env = {"KEEP": "a"}  # the harness uses it on os.environ and on a module's namespace
    with pytest.raises(ValueError):
        with scoped_item(env, "NEW", "1"), scoped_item(env, "KEEP", "b"):
            assert env == {"KEEP": "b", "NEW": "1"}
            raise ValueError
    assert env == {"KEEP": "a"}


def test_forward_hooks_removed_also_on_error():
    layer = torch.nn.Linear(2, 2)
    calls = []
    with pytest.raises(RuntimeError):
        with forward_hooks(
            layer, pre=lambda m, a: calls.append("pre"), post=lambda m, a, o: calls.append("post")
        ):
            layer(torch.ones(1, 2))
            raise RuntimeError
    assert calls == ["pre", "post"]
    assert not layer._forward_hooks and not layer._forward_pre_hooks
