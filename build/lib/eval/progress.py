"""The harness's progress bar: one tick per sample, with running accuracy and visual tokens kept.

The running accuracy is a first-letter match against the doc's gold option letter (MVBench: index of ``answer`` in
``candidates``; LongVideoBench: ``correct_choice``; VideoMME and MLVU: ``answer``). It is a live indication only:
the record's accuracy is lmms-eval's own scoring of the same answers.
"""

from __future__ import annotations

import re
import sys

from tqdm import tqdm

_LETTER = re.compile(r"\b([A-E])\b")


def gold_letter(doc: dict) -> str | None:
    """The correct option letter of a multiple-choice doc in any of the four benchmark formats, else ``None``."""
    if "candidates" in doc and doc.get("answer") in doc["candidates"]:
        return "ABCDE"[doc["candidates"].index(doc["answer"])]
    if "correct_choice" in doc:
        return "ABCDE"[int(doc["correct_choice"])]
    ans = doc.get("answer")
    return ans if isinstance(ans, str) and len(ans) == 1 and ans in "ABCDE" else None


def first_letter(text: str) -> str | None:
    m = _LETTER.search(text) if text else None
    return m.group(1) if m else None


class Progress:
    """tqdm over ``total`` samples; :meth:`update` takes the doc, the answer and the sample's measurement row."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.n = self.correct = 0
        self.kept = self.seen = 0
        self.bar = tqdm(total=total, desc=desc, unit="sample", disable=not enabled, file=sys.stderr, dynamic_ncols=True)

    def update(self, doc: dict, answer: str, row: dict) -> None:
        self.n += 1
        gold = gold_letter(doc)
        self.correct += int(gold is not None and first_letter(answer) == gold)
        self.kept += int(row.get("visual_tokens_out") or 0)
        self.seen += int(row.get("visual_tokens_in") or 0)
        self.bar.set_postfix(acc=f"{100 * self.correct / self.n:.1f}", kept=f"{self.kept / self.n:.0f}/{self.seen / self.n:.0f}")
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
