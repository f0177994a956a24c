"""The environment is the lock, and records carry enough of it to detect drift."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

from eval import env

LOCK = Path(__file__).resolve().parents[2] / "requirements" / "lock.txt"


def _locked_for_this_platform() -> dict[str, str]:
    """{name: version} of the lock's entries whose environment marker holds here (parsed independently of env.py)."""
    out = {}
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line)
        if m and (m.group(3) is None or Marker(m.group(3)).evaluate()):
            out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def test_installed_environment_is_exactly_the_lock():
    locked = _locked_for_this_platform()
    assert len(locked) > 100 and {"torch", "transformers", "lmms-eval", "filelock"} <= set(locked)
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = {n: (v, installed.get(n)) for n, v in locked.items() if installed.get(n) != v}
    assert not wrong, f"installed versions differ from requirements/lock.txt (run `make install`): {wrong}"
    # nothing beyond the lock but the project itself and the venv's own installer
    extra = set(installed) - set(locked) - {"vidcom2-harness", "pip", "setuptools", "wheel"}
    assert not extra, f"installed but not locked: {sorted(extra)}"


def test_lmms_eval_evaluator_path_imports():
    # lmms-eval 0.7.3's simple_evaluate patches filelock through filelock._api, which filelock 4 removed
    from lmms_eval import evaluator

    evaluator._enable_reentrant_filelocks()
    assert getattr(evaluator._enable_reentrant_filelocks, "_patched", False)


def test_record_env_lists_every_distribution_and_its_hash():
    block = env.describe("cpu", "float32", "sdpa")
    dists = block["distributions"]
    assert dists["torch"] == metadata.version("torch")
    assert dists["lmms-eval"] == metadata.version("lmms-eval")
    assert len(dists) == len({canonicalize_name(d.metadata["Name"]) for d in metadata.distributions()})
    assert block["environment_sha256"] == env.environment_digest(dists)
    assert re.fullmatch(r"[0-9a-f]{64}", block["lock_sha256"])


def test_environment_digest_moves_with_any_version():
    a = {"torch": "2.14.1", "filelock": "3.32.7"}
    assert env.environment_digest(a) == env.environment_digest(dict(reversed(list(a.items()))))
    assert env.environment_digest(a) != env.environment_digest({**a, "filelock": "4.3.1"})


def test_drift_names_the_packages_that_differ():
    same = {"distributions": {"torch": "2.14.1", "filelock": "3.32.7"}}
    assert env.drift([same, dict(same)]) is None
    moved = {"distributions": {"torch": "2.14.1", "filelock": "4.3.1"}}
    note = env.drift([same, moved, same])
    assert note == "rows come from 2 different environments: filelock 3.32.7|4.3.1"
    # records written before `distributions` existed compare on their top-level `versions`
    old = [{"versions": {"torch": "2.13.0"}}, {"versions": {"torch": "2.14.1"}}]
    assert env.drift(old) == "rows come from 2 different environments: torch 2.13.0|2.14.1"
