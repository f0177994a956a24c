"""The lock check (scripts/lock.py --check, run first by CI) accepts this checkout and refuses a stale lock."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _copy(tmp_path: Path) -> Path:
    for rel in ("pyproject.toml", "scripts/lock.py", "requirements/lock.txt", "requirements/bootstrap.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    return tmp_path


def _check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(root / "scripts" / "lock.py"), "--check"], capture_output=True, text=True)


def test_checkout_lock_matches_pyproject():
    done = _check(ROOT)
    assert done.returncode == 0, done.stderr


def test_dependency_added_without_make_lock_is_refused(tmp_path):
    root = _copy(tmp_path)
    py = root / "pyproject.toml"
    py.write_text(py.read_text().replace('"packaging>=23",', '"packaging>=23",\n    "rich>=13",', 1))
    done = _check(root)
    assert done.returncode == 1
    assert "out of date with pyproject.toml" in done.stderr and "make lock" in done.stderr


def test_formatting_of_pyproject_does_not_count(tmp_path):
    root = _copy(tmp_path)
    py = root / "pyproject.toml"
    py.write_text(py.read_text().replace('description = "', 'description = "(edited) ', 1) + "\n# a comment\n")
    assert _check(root).returncode == 0


def test_pin_moved_in_pyproject_but_not_in_lock_is_refused(tmp_path):
    root = _copy(tmp_path)
    lock = root / "requirements" / "lock.txt"
    lock.write_text(lock.read_text().replace("\ntransformers==5.23.0 ", "\ntransformers==5.22.0 ", 1))
    done = _check(root)
    assert done.returncode == 1 and "transformers==5.23.0" in done.stderr


def test_lock_names_no_index_or_download_url():
    text = (ROOT / "requirements" / "lock.txt").read_text() + (ROOT / "requirements" / "bootstrap.txt").read_text()
    assert "://" not in text and "--index-url" not in text and "--extra-index-url" not in text
