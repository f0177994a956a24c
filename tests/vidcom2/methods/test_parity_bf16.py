"""Parity with the official code in the dtype real runs use (bf16), against references written here from the
official code's operations (read at the commits named in each method's docstring), or the one documented
difference asserted."""

import pytest
import torch
import torch.nn.functional as F

import vidcom2
from vidcom2.methods import pdrop, visionzip

BF16 = torch.bfloat16


def _x(f, n, d, seed, dtype=BF16):
    return torch.randn(f, n, d, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _lowest(sims, k):
    """The k smallest entries of a 1-D tensor, ties -> lower index (the project's documented tie rule; the official
    ``topk`` leaves ties to the backend)."""
    return sorted(range(sims.numel()), key=lambda j: (float(sims[j]), j))[:k]


# DyCoke TTM (KD-TAO/DyCoke dd74634, llava_arch.py::dycole_ttm) ---------------------------------------------------
def official_ttm(x, k_ratio):
    """The official two passes in x's dtype: pass 1 normalises both frames, then cosine; pass 2 plain cosine.
    Returns {pruned frame: kept indices in ascending-similarity order}."""
    f, n = x.shape[:2]
    k = int((1 - k_ratio) * n)
    kept = {}
    for i in range(0, f - 1, 2):
        a, b = F.normalize(x[i], p=2, dim=1), F.normalize(x[i + 1], p=2, dim=1)
        kept[i + 1] = _lowest(F.cosine_similarity(a, b, dim=1), k)
    for i in range(0, f - 4, 4):
        kept[i + 2] = _lowest(F.cosine_similarity(x[i], x[i + 2], dim=1), k)
    return kept


def _ttm_frames(sel, f, n):
    order = sel.flat_indices().tolist()
    return {t: [j % n for j in order if j // n == t] for t in range(f)}


@pytest.mark.parametrize("name", ["dycoke_ttm", "dycoke"])
def test_dycoke_bf16_selects_what_the_official_code_selects(name):
    f, n = 8, 196
    # temporally redundant frames (a shared component), as in real videos: bf16 cosines close to 1, many ties
    x = (3 * _x(1, n, 64, seed=1, dtype=torch.float32) + _x(f, n, 64, seed=0, dtype=torch.float32)).to(BF16)
    want = official_ttm(x, 0.7)
    sel = vidcom2.apply(name, x, 0.5, merge_ratio=0.7)
    got = _ttm_frames(sel, f, n)
    for t in range(f):
        assert got[t] == (want[t] if t in want else list(range(n))), t
    assert sel.stats["pass1_normalise"] is True
    # the documented difference: plain cosine in pass 1 (the earlier project behaviour) selects other tokens in bf16
    plain = _ttm_frames(vidcom2.apply(name, x, 0.5, merge_ratio=0.7, pass1_normalise=False), f, n)
    differ = sum(len(set(plain[t]) ^ set(want[t])) for t in want) // 2
    assert differ > 0
    assert all(plain[t] == want[t] for t in want if t % 2 == 0)  # pass-2 frames: plain cosine in both


def test_dycoke_records_stage2_and_takes_the_scripts_p():
    x = _x(4, 20, 8, seed=1, dtype=torch.float32)
    st = vidcom2.apply("dycoke", x, 0.8, stage2_prune=0.8).stats
    assert (st["stage2_prune"], st["stage2_layer"], st["stage2_threshold"]) == (0.8, 3, 0.9)
    assert vidcom2.apply("dycoke", x, 0.8).stats["stage2_prune"] == 0.7  # README default


# DivPrune (vbdi/divprune 799e2d9, LLaVA/llava/model/llava_arch.py::DivPrune) --------------------------------------
def official_divprune(x, k):
    """The official loop, literally, in x's dtype (cosine matrix, min over all selected rows each iteration)."""
    norm = x / x.norm(dim=1, keepdim=True)
    dist = 1.0 - torch.mm(norm, norm.t())
    s = []
    for i in range(k):
        if i == 0:
            scores = torch.topk(dist, 2, dim=0, largest=False).values[1, :]
        else:
            scores = torch.min(dist.index_select(0, torch.tensor(s)), dim=0).values
        s.append(int(torch.argmax(scores)))
    assert len(set(s)) == k  # a regular input: the official loop picks no token twice
    return sorted(s)


@pytest.mark.parametrize("seed", [0, 1])
def test_divprune_bf16_selects_what_the_official_code_selects(seed):
    f, n, d, r = 4, 49, 32, 0.25
    x = _x(f, n, d, seed=seed)
    k = round(r * f * n)
    want = official_divprune(x.reshape(f * n, d), k)
    sel = vidcom2.apply("divprune", x, r)
    assert sel.keep.reshape(-1).nonzero().squeeze(1).tolist() == want
    assert sel.stats["compute_dtype"] == "bfloat16"
    up = vidcom2.apply("divprune", x, r, compute_dtype="float32")
    assert up.stats["compute_dtype"] == "float32"
    assert up.keep.reshape(-1).nonzero().squeeze(1).tolist() == official_divprune(x.float().reshape(f * n, d), k)


def test_divprune_fp32_upcast_differs_on_bf16_inputs():
    # the documented difference: the project's former fp32 upcast picks other tokens than the official bf16 code
    f, n, d, r = 4, 49, 32, 0.25
    differs = 0
    for seed in range(4):
        x = _x(f, n, d, seed=seed)
        a = vidcom2.select("divprune", x, r)
        b = vidcom2.select("divprune", x, r, compute_dtype="float32")
        differs += int(not torch.equal(a, b))
    assert differs > 0
    with pytest.raises(ValueError, match="compute_dtype"):
        vidcom2.select("divprune", x, r, compute_dtype="fp8")


# VisionZip as HoliTom runs it (cokeshao/HoliTom e9b2972, visionzip/llava_arch.py) --------------------------------
def holitom_visionzip(x, scores, keys, spatial_tokens):
    """One frame as HoliTom's visionzip(): dominant int(T*54/64) by attention, the rest merged into uniformly
    spaced targets; returns (flat order dominant-first, {slot: feature}) in float64."""
    n = x.shape[0]
    dominant = int(spatial_tokens * 54 / 64)
    contextual = spatial_tokens - dominant
    dom = sorted(sorted(range(n), key=lambda i: -float(scores[i]))[:dominant])  # masked_select: position order
    rest = [i for i in range(n) if i not in dom]
    step = max(1, len(rest) // contextual)
    targets = [rest[j] for j in range(0, len(rest), step)][:contextual]
    metric = {i: keys[i].double() / keys[i].double().norm() for i in rest}
    groups = {t: [] for t in targets}
    for o in (i for i in rest if i not in targets):
        groups[max(targets, key=lambda t: (float(metric[o] @ metric[t]), -targets.index(t)))].append(o)
    feats = {i: x[i].double() for i in dom}
    for t in targets:
        extra = torch.stack([x[m].double() for m in groups[t]]).mean(0) if groups[t] else 0
        feats[t] = x[t].double() + extra
    return dom + targets, feats


@pytest.mark.parametrize("r,tokens", [(0.10, 20), (0.15, 30), (0.20, 40), (0.25, 50)])
def test_visionzip_holitom_budget_table_and_dominant_first_order(r, tokens):
    f, n = 2, 196
    g = torch.Generator().manual_seed(3)
    x = torch.randn(f, n, 6, generator=g, dtype=torch.float64)
    scores = torch.rand(f, n, generator=g, dtype=torch.float64)
    keys = torch.randn(f, n, 4, generator=g, dtype=torch.float64)
    sel = vidcom2.apply("visionzip", x, r, scores=scores, keys=keys, budget="holitom", order="dominant_first")
    assert sel.keep.sum(1).tolist() == [tokens] * f
    order = []
    for t in range(f):
        want_order, feats = holitom_visionzip(x[t], scores[t], keys[t], tokens)
        order += [t * n + i for i in want_order]
        for i, v in feats.items():
            assert torch.allclose(sel.features[t, i], v, atol=1e-12)
    assert sel.flat_indices().tolist() == order
    # the project's own rule: round(r * 196) = 20/29/39/49, positions ascending
    plain = vidcom2.apply("visionzip", x, r, scores=scores, keys=keys)
    assert plain.keep.sum(1).tolist() == [round(r * n)] * f and plain.order is None


def test_visionzip_holitom_table_refuses_what_it_does_not_cover():
    x, s, k = torch.randn(1, 196, 4), torch.rand(1, 196), torch.randn(1, 196, 3)
    with pytest.raises(ValueError, match="SPATIAL_TOKENS.*0.3"):
        vidcom2.select("visionzip", x, 0.3, scores=s, keys=k, budget="holitom")
    with pytest.raises(ValueError, match="169 tokens per frame"):
        vidcom2.select("visionzip", x[:, :169], 0.25, scores=s[:, :169], keys=k[:, :169], budget="holitom")
    assert visionzip.HOLITOM_SPATIAL_TOKENS == {0.10: 20, 0.15: 30, 0.20: 40, 0.25: 50}


# PDrop (Cooperx521/PyramidDrop 6444f30) ------------------------------------------------------------------------
def test_pdrop_official_schedule_is_reachable_and_its_counts_documented():
    sched = pdrop.schedule(0.125, 32, pdrop.OFFICIAL_LAYERS)
    assert sched == [(8, 0.5), (16, 0.25), (24, 0.125)]  # lambda = 0.5 exactly, the scripts' ratio list
    assert pdrop.schedule(0.125, 32) == sched  # quarter depth at L = 32 is the official layer list
    for n in (784, 6272):  # LLaVA-OV 196 * F, F even: int and round agree
        assert pdrop.stage_counts(sched, n, "truncate") == [int(n * x) for x in (0.5, 0.25, 0.125)]
        assert pdrop.stage_counts(sched, n, "round") == pdrop.stage_counts(sched, n, "truncate")
    # the documented difference: a fractional part >= 0.5 (here 7 * 0.25 = 1.75, 7 * 0.125 = 0.875)
    assert pdrop.stage_counts(sched, 7, "truncate") == [3, 1, 1]  # int(0.875) = 0, floored at one token
    assert pdrop.stage_counts(sched, 7, "round") == [4, 2, 1]
    assert pdrop.stage_counts(sched, 13, "truncate") == [6, 3, 1]  # int(6.5), int(3.25), int(1.625)
    from vidcom2.stages.in_llm import plan_for

    plan = plan_for(vidcom2.get_method("pdrop", layers=(8, 16, 24)), 0.125, 32, 13, mrope=False)
    assert [s.keep for s in plan.stages] == [6, 3, 2]  # the project's rounding: half-even 6.5 -> 6, 3.25, 1.625
    official = vidcom2.get_method("pdrop", layers=(8, 16, 24), counting="truncate")
    assert [s.keep for s in plan_for(official, 0.125, 32, 13, mrope=False).stages] == [6, 3, 1]
    with pytest.raises(ValueError, match="counting"):
        vidcom2.get_method("pdrop", counting="floor")
    with pytest.raises(ValueError, match="counting"):
        pdrop.stage_counts(sched, 7, "floor")


# VidCom2 ties ---------------------------------------------------------------------------------------------------
def test_vidcom2_records_its_tie_rule_and_keeps_the_lower_index():
    # every frame is one token repeated: all scores of a frame tie, so the kept tokens are the first k_t
    base = torch.randn(3, 1, 8, generator=torch.Generator().manual_seed(5))
    x = base.expand(3, 12, 8).contiguous().to(BF16)
    sel = vidcom2.apply("vidcom2", x, 0.5)
    assert sel.stats["tie_rule"] == "lower_index"
    for t, k in enumerate(sel.keep.sum(1).tolist()):
        assert sel.keep[t].nonzero().squeeze(1).tolist() == list(range(k))
