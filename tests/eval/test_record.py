"""Record paths, validation and atomic writes (schema version 2, reading 1; docs/record_schema.md)."""

from __future__ import annotations

import json
import os

import pytest

from eval import record


def minimal() -> dict:
    lat = dict.fromkeys(record.LATENCY_KEYS)
    eff = dict.fromkeys(record.EFFICIENCY_KEYS)
    eff["latency_s"] = lat
    rec = dict.fromkeys(record.REQUIRED)
    ident = {"seed": 0, "method": {"name": "vidcom2"}}
    rec.update(
        schema_version=2, status="finished", identity=ident, identity_hash=record.identity_hash(ident), benchmark_kind="mvbench", retention_ratio=0.25,
        accuracy={"metric": "mvbench_accuracy", "headline": 50.0, "breakdown": {}, "unparsable": 0},
        efficiency=eff, env=dict.fromkeys(record.ENV_KEYS), config={}, lmms_eval={},
    )
    return rec


def test_paths_follow_the_schema():
    p = record.record_path("results/runs", "tiny_mvbench", "tiny_qwen2_5_vl", "vidcom2", 0.25, 0, "0123456789")
    assert str(p) == "results/runs/tiny_mvbench/tiny_qwen2_5_vl/vidcom2/r0.25/seed0-0123456789/record.json"
    # vanilla is always r1.00 whatever ratio the sweep asked for
    assert "none/r1.00/seed3-" in str(record.record_path("r", "b", "m", "none", 0.25, 3, "a" * 10))
    # an exact ratio two decimals would round keeps its digits (the hash holds it exactly either way)
    assert "/r0.254/" in str(record.record_path("r", "b", "m", "vidcom2", 0.254, 0, "a" * 10))


@pytest.mark.parametrize("name", ["../x", "..", "/abs", "a/b", ".hidden", "", "a\\b", "x" * 200])
def test_path_names_that_escape_are_refused(name, tmp_path):
    with pytest.raises(ValueError, match="cannot name a results folder"):
        record.record_path(tmp_path, "b", name, "vidcom2", 0.25, 0, "a" * 10)


def test_a_symlinked_component_leaving_results_dir_is_refused(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "runs" / "bench").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="outside results_dir"):
        record.record_path(tmp_path / "runs", "bench", "m", "vidcom2", 0.25, 0, "a" * 10)


def test_identity_hash_is_sha256_of_canonical_json():
    import hashlib

    ident = {"seed": 1, "model": {"frames": 8, "name": "m"}, "retention_ratio": 0.254}
    canonical = '{"model":{"frames":8,"name":"m"},"retention_ratio":0.254,"seed":1}'  # written out by hand
    assert record.identity_hash(ident) == hashlib.sha256(canonical.encode()).hexdigest()[:10]
    assert record.identity_hash(dict(reversed(list(ident.items())))) == record.identity_hash(ident)


def test_schema_1_records_still_validate_and_get_an_identity():
    rec = minimal()
    for k in ("identity", "identity_hash"):
        rec.pop(k)
    rec.update(schema_version=1, hparams={"budget": "fca"}, config={"seed": 0, "limit": 2, "device": "cpu",
                                                                   "method": {"name": "vidcom2"}})
    record.validate(rec)
    ident = record.record_identity(rec)
    assert ident["limit"] == 2 and ident["method"] == {"name": "vidcom2", "budget": "fca"} and ident["device"] == "cpu"
    with pytest.raises(ValueError, match="schema_version 2"):
        record.write(rec, "unused.json")  # new records are schema 2 only


def test_edited_identity_is_refused():
    rec = minimal()
    rec["identity"]["seed"] = 5
    with pytest.raises(ValueError, match="identity_hash"):
        record.validate(rec)


def test_write_read_roundtrip_and_finished(tmp_path):
    path = tmp_path / "a" / "record.json"
    record.write(minimal(), path)
    assert record.read(path)["accuracy"]["headline"] == 50.0
    assert record.is_finished(path) and record.is_finished(path, minimal()["identity_hash"])
    assert not record.is_finished(path, "f" * 10)  # another identity's record is not this run's
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]  # no temp file left


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("env"), "misses keys"),
        (lambda r: r.update(status="running"), "status"),
        (lambda r: r["accuracy"].update(headline=0.5 * 200), None),  # 100 is allowed
        (lambda r: r["accuracy"].update(headline=101.0), "0-100"),
        (lambda r: r.update(retention_ratio=1.5), "retention_ratio"),
        (lambda r: r["efficiency"]["latency_s"].pop("prefill"), "latency_s"),
        (lambda r: r.update(benchmark_kind="imagenet"), "benchmark_kind"),
    ],
)
def test_validate_rejects_broken_records(mutate, message, tmp_path):
    rec = minimal()
    mutate(rec)
    if message is None:
        record.validate(rec)
        return
    with pytest.raises(ValueError, match=message):
        record.validate(rec)
    with pytest.raises(ValueError):
        record.write(rec, tmp_path / "record.json")
    assert not (tmp_path / "record.json").exists()


def test_failed_write_keeps_previous_record(tmp_path, monkeypatch):
    path = tmp_path / "record.json"
    record.write(minimal(), path)
    before = path.read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    rec = minimal()
    rec["accuracy"]["headline"] = 10.0
    with pytest.raises(OSError):
        record.write(rec, path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_corrupt_file_is_not_finished(tmp_path):
    p = tmp_path / "record.json"
    p.write_text("{not json")
    assert not record.is_finished(p)
    p.write_text(json.dumps({"status": "finished"}))
    assert not record.is_finished(p)


def test_nan_becomes_null(tmp_path):
    rec = minimal()
    rec["efficiency"]["total_wall_s"] = float("nan")
    record.write(rec, tmp_path / "r.json")
    assert record.read(tmp_path / "r.json")["efficiency"]["total_wall_s"] is None
