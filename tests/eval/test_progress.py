"""The progress bar's running accuracy: gold letters of the four doc formats and the first option letter."""

from __future__ import annotations

from eval.progress import Progress, first_letter, gold_letter


def test_gold_letter_per_format():
    assert gold_letter({"candidates": ["x", "y", "z"], "answer": "z"}) == "C"  # MVBench
    assert gold_letter({"correct_choice": 1}) == "B"  # LongVideoBench
    assert gold_letter({"answer": "D", "options": []}) == "D"  # VideoMME / MLVU
    assert gold_letter({"answer": "a free-form answer"}) is None


def test_first_letter():
    assert first_letter("(B) a dog") == "B"
    assert first_letter("The answer is C.") == "C"
    assert first_letter("no idea") is None and first_letter("") is None


def test_running_accuracy_and_tokens():
    p = Progress(2, "t", enabled=False)
    p.update({"correct_choice": 0}, "A.", {"visual_tokens_in": 100, "visual_tokens_out": 25})
    p.update({"correct_choice": 0}, "B", {"visual_tokens_in": 100, "visual_tokens_out": 30})
    assert (p.n, p.correct, p.kept, p.seen) == (2, 1, 55, 200)
    p.close()
