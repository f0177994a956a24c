"""Atomic writes without leftovers: a writer killed with SIGKILL mid-write leaves a temp file that the next run
removes; two processes writing one samples file and one record never fail each other; live writers' temp files
are never removed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from eval import record

ROOT = Path(__file__).resolve().parents[2]

# a writer that stops half-way through its temp file until it is killed
HALF_WRITER = """
import sys, time
from eval import record
def write(f):
    f.write('{"half": ')
    f.flush()
    print("writing", flush=True)
    time.sleep(600)
record.atomic_write(sys.argv[1], write)
"""

# many rewrites of one path; each content is a whole, parseable file
LOOP_WRITER = """
import json, sys
from eval import record
path, tag, kind = sys.argv[1], sys.argv[2], sys.argv[3]
if kind == "samples":
    from eval import runner
print("ready", flush=True)
sys.stdin.readline()  # both start writing together
for i in range(40):
    rows = [{"writer": tag, "i": i, "pad": "x" * 2000} for _ in range(20)]
    if kind == "samples":
        runner.write_samples(__import__("pathlib").Path(path), rows, {})
    else:
        record.write_text(path, json.dumps(rows))
print("ok", flush=True)
"""


def _py(code: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True, **kw)


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_sigkill_during_write_leaves_nothing_after_the_next_run(tmp_path):
    target = tmp_path / "run" / "record.json"
    for _ in range(3):
        proc = _py(HALF_WRITER, str(target))
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert len(_temps(target.parent)) == 3 and not target.exists()  # the debris a kill leaves
    (target.parent / "samples.tmp").write_text("old fixed-name temp")  # debris of the code before schema 2
    (target.parent / ".record.abc123.tmp").write_text("old mkstemp temp")
    removed = record.clean_stale_temps(target.parent)  # what the next run does first (runner.prepare)
    assert len(removed) == 5 and _temps(target.parent) == []


def test_the_next_run_cleans_the_debris_even_when_it_skips(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    import eval.runner
    from tests.eval.test_identity import BASE, _finished

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("eval", overrides=[*BASE, f"results_dir={tmp_path}", f"cache_dir={ROOT / '.cache'}"])
    p = eval.runner.plan(eval.runner.resolved(cfg))
    _finished(p.path, p)
    proc = _py(HALF_WRITER, str(p.path))
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert _temps(p.path.parent)
    monkeypatch.setattr(eval.runner, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    assert eval.runner.run(cfg) == p.path  # skipped: same identity, finished
    assert _temps(p.path.parent) == []


def test_a_live_writers_temp_file_is_kept(tmp_path):
    target = tmp_path / "record.json"
    proc = _py(HALF_WRITER, str(target))
    try:
        assert proc.stdout.readline().strip() == "writing"
        assert record.clean_stale_temps(tmp_path) == [] and len(_temps(tmp_path)) == 1
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert len(record.clean_stale_temps(tmp_path)) == 1


def test_another_hosts_temp_file_is_removed_only_when_old(tmp_path):
    tmp = tmp_path / ".record.json.otherhost.12345.abcdefgh.tmp"
    tmp.write_text("x")
    assert record.clean_stale_temps(tmp_path) == []
    old = time.time() - record.STALE_AFTER_S - 60
    os.utime(tmp, (old, old))
    assert record.clean_stale_temps(tmp_path) == [tmp]


def _two_writers(path: Path, kind: str) -> None:
    procs = [_py(LOOP_WRITER, str(path), tag, kind, stderr=subprocess.PIPE, stdin=subprocess.PIPE) for tag in "ab"]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "ok", err[-2000:]
    assert _temps(path.parent) == []


def test_two_writers_of_one_samples_file(tmp_path):
    path = tmp_path / "run" / "samples.jsonl"
    _two_writers(path, "samples")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 20 and len({(r["writer"], r["i"]) for r in rows}) == 1  # one writer's whole file


def test_two_writers_of_one_record_file(tmp_path):
    path = tmp_path / "run" / "record.json"
    _two_writers(path, "record")
    rows = json.loads(path.read_text())
    assert len(rows) == 20 and rows[0]["i"] == 39  # the last write of whichever renamed last
