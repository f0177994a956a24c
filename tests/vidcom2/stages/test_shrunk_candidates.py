"""The in-LLM candidates of a prompt shrunk before the LLM (``Adapter.shrunk_candidates``, asked by
``stages.in_llm.candidates(..., selections=)`` for methods acting before and inside the LLM): on LLaVA-Video the kept
tokens of each video's packed run, never its row newlines (which carry the video token id), against masks built by
hand from the selections for both newline orders; the features at those columns are the selections' kept features in
order (what ``Plan.groups`` relies on); the default answer of the other families is ``scored_token_mask``."""

from __future__ import annotations

import pytest
import torch

import vidcom2
from vidcom2.adapters import adapter_for, get_adapter
from vidcom2.stages import in_llm, rebuild
from vidcom2.testing import tiny
from vidcom2.types import Selection

ROWS = COLS = 13  # the tiny llava_video grid (SigLIP 384/14, average pool stride 2)


def _batch(arch, processor):
    return tiny.inputs(arch, processor, tiny.make_video(4, 112, 140, seed=5), "What moves where?")


def _shrunk(adapter, model, batch, method, ratio):
    with torch.no_grad():
        encoded = adapter.encode(model, batch)
        feats = encoded.feats[0]
        aux = {"scores": feats.float().norm(dim=-1)} if vidcom2.get_method(method).info.needs_attention else {}
        sel = vidcom2.apply(method, feats, ratio, seed=0, **aux)  # holitom: a stand-in attention signal
        prompt, _ = rebuild.shrink(adapter, model, batch, encoded, [sel], position_mode="contiguous", text_rule="hf5")
    return prompt, sel, encoded.feats[0]


def _by_hand(keep: torch.Tensor, order: str) -> list[bool]:
    """One video's run: per frame its kept count then 13 newlines (after_frame), or per row its kept count then one
    newline (row); a video that keeps everything has the uncompressed (row) layout."""
    order = "row" if bool(keep.all()) else order
    run = []
    for frame in keep:
        rows = frame.view(ROWS, COLS).sum(dim=1).tolist()
        if order == "after_frame":
            run += [True] * int(sum(rows)) + [False] * ROWS
        else:
            for n in rows:
                run += [True] * int(n) + [False]
    return run


@pytest.mark.parametrize("order", ["after_frame", "row"])
@pytest.mark.parametrize("method, ratio", [("vidcom2", 0.25), ("prunevid", 0.5), ("holitom", 0.3)])
def test_llava_video_candidates_are_the_kept_entries_of_the_packed_run(tiny_model, order, method, ratio):
    model, processor = tiny_model("llava_video")
    adapter = adapter_for("llava_video", newline_order=order)
    prompt, sel, feats = _shrunk(adapter, model, _batch("llava_video", processor), method, ratio)
    got = in_llm.candidates(adapter, model, prompt, selections=[sel])
    video = prompt["input_ids"][0] == model.config.video_token_id
    want = torch.zeros_like(video)
    want[video.nonzero().squeeze(1)] = torch.tensor(_by_hand(sel.keep, order))
    assert torch.equal(got, want) and int(got.sum()) == int(sel.keep.sum())
    # the scored mask of the ids would count every newline: the case the adapter answer exists for
    assert int(adapter.scored_token_mask(model, prompt)[0].sum()) == int(sel.keep.sum()) + 4 * ROWS
    # the packed features at the candidates are the selection's kept features in its order (Selection.order /
    # ascending), so Plan.groups built from sel.groups[sel.flat_indices()] names each candidate's own group
    packed = prompt["mm_encoder_outputs"]["video"].pooler_output.reshape(-1, feats.shape[-1])
    run = torch.tensor(_by_hand(sel.keep, order))
    torch.testing.assert_close(packed[run], sel.gather(feats).to(packed.dtype), rtol=0, atol=0)
    assert (packed[~run] == model.model.image_newline.to(packed.dtype)).all()


def test_llava_video_keep_all_is_the_uncompressed_layout(tiny_model):
    # a selection keeping everything is fed in the row layout: the candidates are the slots of the full prompt
    model, processor = tiny_model("llava_video")
    batch = _batch("llava_video", processor)
    adapter = get_adapter(model)
    cols = adapter.video_slots(model, batch)[0].columns
    sel = Selection(keep=torch.ones(cols.shape, dtype=torch.bool))
    want = torch.zeros(batch["input_ids"].shape[-1], dtype=torch.bool)
    want[cols.reshape(-1)] = True
    assert torch.equal(in_llm.candidates(adapter, model, batch, selections=[sel]), want)
    assert torch.equal(in_llm.candidates(adapter, model, batch), want)  # the slots' answer agrees


@pytest.mark.parametrize("order", ["after_frame", "row"])
def test_llava_video_two_videos_in_one_prompt(tiny_model, order):
    # runs of two videos, in prompt order, each with its own frames and kept counts; text between and around
    model, _ = tiny_model("llava_video")
    adapter = adapter_for("llava_video", newline_order=order)
    g = torch.Generator().manual_seed(0)
    sels = [Selection(keep=torch.rand((f, ROWS * COLS), generator=g) < 0.3) for f in (2, 3)]
    vid = model.config.video_token_id
    runs = [_by_hand(s.keep, order) for s in sels]
    ids = [1, 2] + [vid] * len(runs[0]) + [3] + [vid] * len(runs[1]) + [4, 5]
    want = [False, False] + runs[0] + [False] + runs[1] + [False, False]
    got = adapter.shrunk_candidates(model, {"input_ids": torch.tensor([ids])}, sels)
    assert got.tolist() == want
    with pytest.raises(ValueError, match="pass the prompt these selections shrank"):
        adapter.shrunk_candidates(model, {"input_ids": torch.tensor([ids[:-4] + [4, 5]])}, sels)


@pytest.mark.parametrize("arch", ["llava_onevision", "qwen2_5_vl"])
def test_default_answer_is_the_scored_token_mask(tiny_model, arch):
    # families without layout tokens inside a shrunk run: unchanged (LLaVA-OV's one newline ends each run)
    model, processor = tiny_model(arch)
    batch = _batch(arch, processor)
    adapter = get_adapter(model)
    prompt, sel, _ = _shrunk(adapter, model, batch, "vidcom2", 0.25)
    got = in_llm.candidates(adapter, model, prompt, selections=[sel])
    assert torch.equal(got, adapter.scored_token_mask(model, prompt)[0])
    assert int(got.sum()) == int(sel.keep.sum())
    full = Selection(keep=torch.ones(adapter.video_slots(model, batch)[0].columns.shape, dtype=torch.bool))
    assert torch.equal(adapter.shrunk_candidates(model, batch, [full]), adapter.scored_token_mask(model, batch)[0])


def test_attach_refuses_a_prompt_the_selections_did_not_shrink(tiny_model):
    # the count check stays as a safety net: the uncompressed prompt with a selection that dropped tokens
    model, processor = tiny_model("llava_onevision")
    batch = _batch("llava_onevision", processor)
    adapter = get_adapter(model)
    keep = torch.zeros(adapter.video_slots(model, batch)[0].columns.shape, dtype=torch.bool)
    keep[:, :10] = True
    with pytest.raises(ValueError, match="shrunk_candidates marks .* pass the prompt these selections shrank"):
        with in_llm.attach(adapter, model, vidcom2.get_method("flashvid"), 0.25, batch, selections=[Selection(keep)]):
            pass
