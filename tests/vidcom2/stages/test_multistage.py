"""The seam for methods acting before the LLM AND inside it (``MethodInfo.in_llm``), on a minimal generic method
defined here (registered for this module only): compress shrinks the prompt with the method's selection, then its
plan runs on the shrunk prompt for the visual tokens that remain. Checked: what the plan receives, prune mode ==
mask mode through compress on every architecture, a keep-all in-LLM part == the pre-LLM part alone, per-group
budgets, recorded counts, batch refusal and the MethodInfo rules. FlashVID / PruneVid use it in their own tests."""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

import vidcom2
from tests.vidcom2._helpers import assert_restored, generate_compressed
from vidcom2 import registry
from vidcom2.adapters import get_adapter
from vidcom2.budget import count
from vidcom2.methods.fastv import LastQueryRow
from vidcom2.stages import in_llm
from vidcom2.testing import tiny
from vidcom2.types import MethodInfo, Plan, Selection, Stage

compress_module = importlib.import_module("vidcom2.compress")  # the module (vidcom2.compress is the function)

ARCHS = ("llava_onevision", "llava_video", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")
NEW = 4
SEEN: list = []  # (num_visual, selections) of every plan() call of the probe


def _keep_by_norm(features: torch.Tensor, r: float) -> torch.Tensor:
    """Per frame the ``count(r, N)`` tokens of largest feature norm (random features: no ties)."""
    f, n, _ = features.shape
    idx = features.float().norm(dim=-1).topk(count(r, n), dim=1).indices
    return torch.zeros((f, n), dtype=torch.bool, device=features.device).scatter_(1, idx, True)


@dataclass(frozen=True)
class ProbePre:
    """The pre-LLM part alone (the reference for a keep-all in-LLM part)."""

    info: ClassVar[MethodInfo] = MethodInfo(name="_probe_pre", stage="pre_llm", paper="test", code="test")
    layer: int = 2
    keep_in_llm: float = 0.5
    grouped: bool = False

    def __call__(self, features, retention_ratio, *, scores=None, keys=None, generator=None) -> Selection:
        keep = _keep_by_norm(features, retention_ratio)
        frame = torch.arange(keep.shape[0], device=keep.device).view(-1, 1).expand_as(keep)
        return Selection(keep=keep, groups=torch.where(keep, frame, -1))


@dataclass(frozen=True)
class ProbeTwoStage(ProbePre):
    """Pre-LLM: per frame the largest-norm tokens; in the LLM: before ``layer`` keep ``keep_in_llm`` of what remains
    by FastV's last-query row (globally, or per frame with ``grouped``)."""

    info: ClassVar[MethodInfo] = MethodInfo(name="_probe_two", stage="pre_llm", paper="test", code="test", in_llm=True)

    def plan(self, retention_ratio, num_layers, num_visual, *, mrope, selections):
        SEEN.append((num_visual, selections))
        if self.keep_in_llm >= 1.0:
            return Plan("_probe_two")
        if not self.grouped:
            return Plan("_probe_two", (Stage(self.layer, count(self.keep_in_llm, num_visual)),), LastQueryRow())
        group_of = torch.cat([s.groups.reshape(-1)[s.flat_indices()] for s in selections])
        sizes = torch.bincount(group_of)
        keep = (sizes.float() * self.keep_in_llm).long().clamp(min=1)
        stage = Stage(self.layer, int(keep.sum()))
        return Plan("_probe_two", (stage,), LastQueryRow(), budget="groups", groups=(group_of, keep))


@pytest.fixture(scope="module", autouse=True)
def probes():
    for cls in (ProbePre, ProbeTwoStage):
        registry.register(cls)
    try:
        yield
    finally:
        for cls in (ProbePre, ProbeTwoStage):
            registry._METHODS.pop(cls.info.name, None)


@pytest.fixture
def mask_mode(monkeypatch):
    """compress runs its in-LLM stage as the mask-mode reference (full shrunk sequence, dropped columns masked)."""
    monkeypatch.setitem(compress_module.GENERATE_STAGES, "in_llm", functools.partial(in_llm.generate, mode="mask"))


def _batch(arch, processor):
    return tiny.inputs(arch, processor, tiny.make_video(4, 112, 140, seed=2), "What moves where?")


def _kv(out):
    return [layer.keys.shape[-2] for layer in out.past_key_values.layers]


def test_plan_gets_the_remaining_tokens_and_the_selections(tiny_model):
    model, processor = tiny_model("qwen2_5_vl")
    batch = _batch("qwen2_5_vl", processor)
    SEEN.clear()
    out, session = generate_compressed(model, batch, "_probe_two", 0.5, NEW)
    # the in-LLM stage builds the plan once, from the tokens the selections kept, and runs it
    assert len(SEEN) == 1
    num_visual, selections = SEEN[-1]
    assert len(selections) == 1 and selections[0].features is None  # the feature copy is not kept alive
    sel = selections[0]
    assert num_visual == int(sel.keep.sum()) == sel.keep.shape[0] * count(0.5, sel.keep.shape[1])
    s = session.samples[0]
    kept = count(0.5, num_visual)
    assert s.visual_tokens_in == sel.keep.numel()
    assert s.visual_tokens_per_layer == (num_visual, num_visual, kept, kept)  # layer 0 reads the pre-LLM count
    assert (s.visual_tokens_out, s.visual_tokens_layer_avg) == (kept, (2 * num_visual + 2 * kept) / 4)
    assert session.info["acts"] == ["pre_llm", "in_llm"] and session.info["stage"] == "pre_llm"
    assert_restored(model)


@pytest.mark.parametrize("arch", ARCHS)
def test_prune_equals_mask_mode_through_compress(tiny_model, arch, request):
    model, processor = tiny_model(arch)
    batch = _batch(arch, processor)
    kw = {"text_rule": "hf5"} if arch.startswith("qwen2") else {}
    pruned, session = generate_compressed(model, batch, "_probe_two", 0.5, NEW, **kw)
    request.getfixturevalue("mask_mode")
    masked, _ = generate_compressed(model, batch, "_probe_two", 0.5, NEW, **kw)
    assert (torch.stack(pruned.logits) - torch.stack(masked.logits)).abs().max().item() <= 1e-5
    assert torch.equal(pruned.sequences, masked.sequences)
    # the pruned run sliced the shrunk prompt: layers < 2 hold it whole, deeper layers the survivors
    per_layer = session.samples[0].visual_tokens_per_layer
    shrunk = session.samples[0].prompt_tokens_out
    steps = NEW - 1
    assert _kv(pruned) == [shrunk + steps] * 2 + [shrunk - per_layer[0] + per_layer[-1] + steps] * 2
    assert _kv(masked) == [shrunk + steps] * 4
    assert_restored(model)


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen3_vl"])
def test_keep_all_in_llm_part_equals_the_pre_llm_part_alone(tiny_model, arch):
    model, processor = tiny_model(arch)
    batch = _batch(arch, processor)
    both, s_both = generate_compressed(model, batch, "_probe_two", 0.3, NEW, keep_in_llm=1.0)
    alone, s_alone = generate_compressed(model, batch, "_probe_pre", 0.3, NEW)
    assert (torch.stack(both.logits) - torch.stack(alone.logits)).abs().max().item() <= 1e-6
    assert torch.equal(both.sequences, alone.sequences)
    assert s_both.samples[0].visual_tokens_out == s_alone.samples[0].visual_tokens_out


def test_group_budgets_keep_a_share_of_every_group(tiny_model):
    # in_llm.attach on the uncompressed prompt with a keep-all "pre-LLM" Selection grouped by frame: every frame
    # (group) keeps int(size * 0.3) of its candidates by the attention row, not a global top-k of the same total
    model, processor = tiny_model("llava_onevision")
    batch = _batch("llava_onevision", processor)
    adapter = get_adapter(model)
    f, n = 4, 196
    frame = torch.arange(f).view(-1, 1).expand(f, n)
    sel = Selection(keep=torch.ones((f, n), dtype=torch.bool), groups=frame.clone())
    method = vidcom2.get_method("_probe_two", grouped=True, keep_in_llm=0.3)
    with in_llm.attach(adapter, model, method, 0.5, batch, selections=[sel]) as state:
        model.generate(**batch, max_new_tokens=2, do_sample=False)
    cols = adapter.video_slots(model, batch)[0].columns  # [F, N] prompt columns of each frame's tokens
    survivors = state.keep[2]
    per_frame = [int(torch.isin(survivors, cols[t]).sum()) for t in range(f)]
    assert per_frame == [int(n * 0.3)] * f
    row = state.rows[2]  # the row over the full prompt (nothing pruned before layer 2)
    for t in range(f):
        want = row[cols[t]].topk(int(n * 0.3)).indices
        assert set(cols[t][want].tolist()) == set(survivors[torch.isin(survivors, cols[t])].tolist())
    assert state.visual_per_layer == [f * n] * 2 + [f * int(n * 0.3)] * 2
    assert_restored(model)


def test_batches_are_refused_and_info_rules(tiny_model):
    assert vidcom2.get_method("_probe_two").info.single_prompt is not None
    assert vidcom2.get_method("_probe_pre").info.single_prompt is None
    assert vidcom2.get_method("_probe_two").info.acts == ("pre_llm", "in_llm")
    assert "_probe_two" in vidcom2.list_methods("in_llm") and "_probe_two" in vidcom2.list_methods("pre_llm")
    with pytest.raises(ValueError, match="already acts there"):
        MethodInfo(name="x", stage="in_llm", paper="p", code="c", in_llm=True)
    with pytest.raises(ValueError, match="set in_llm or decode"):
        MethodInfo(name="x", stage="pre_llm", paper="p", code="c", in_llm=True, decode=True)
    model, processor = tiny_model("qwen2_vl")
    video = tiny.make_video(4, 112, 140, seed=2)
    batch = tiny.inputs("qwen2_vl", processor, [video, video], ["What moves?", "Where?"])
    with pytest.raises(ValueError, match="batch size 1"):
        with vidcom2.compress(model, "_probe_two", 0.5):
            model.generate(**batch, max_new_tokens=2)
    assert_restored(model)
