"""Write the tiny hub: a private ``HF_HOME`` in the layout lmms-eval's built-in tasks read (see :mod:`eval.tinyhub`).

For every dataset of :mod:`eval.tinyhub.specs`:

- the ``datasets`` arrow cache a first online ``load_dataset(repo, config)`` leaves, built by datasets' own ``json``
  builder under the repository's cache identity (``<datasets cache>/<org>___<name>/<config>/0.0.0/<hash>/``) so that
  ``load_dataset`` in offline mode finds it through ``CachedDatasetModuleFactory``;
- the hub-cache snapshot ``hub/datasets--<org>--<name>/{refs/<revision>, snapshots/<sha>/<archive>}`` holding the
  videos as an archive (what ``snapshot_download`` returns and lmms-eval unpacks on a first run);
- unless ``unpack=False``, the unpacked video folder ``$HF_HOME/<cache_dir>/...`` (what a finished first run leaves);
- last, the marker file :data:`MARKER` (format and a digest of the spec): the harness reads it to tell the tiny hub
  from a real Hugging Face cache (a tiny benchmark needs it, a real benchmark refuses it) and :func:`ensure` rebuilds a
  hub whose marker is missing or stale (an interrupted build never writes it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

from eval.tasks import tiny_data as td
from eval.tinyhub.specs import DATASETS, HubDataset

DEFAULT = Path(".cache") / "tiny_hub"
#: fixed "commit" of every tiny snapshot (40 hex digits, like a real one)
SHA = hashlib.sha1(b"vidcom2 tiny hub v1").hexdigest()
#: written last by a complete :func:`build`: ``{"format": 1, "digest": <spec digest>, "kinds": [...], ...}``
MARKER = "vidcom2_tiny_hub.json"
FORMAT = 1


def _clip_file(name: str, clips: Path) -> Path:
    path = clips / name
    if not path.is_file():
        td.write_mp4(td.CLIPS[name].render(), path)
    return path


def write_annotations(ds: HubDataset, cache: Path) -> list[Path]:
    """The arrow cache of every config of ``ds`` under the datasets cache folder ``cache``; returns the folders."""
    import datasets
    from datasets.packaged_modules.json.json import Json

    datasets.disable_progress_bars()

    org, _, name = ds.repo.rpartition("/")
    out = []
    with tempfile.TemporaryDirectory(dir=cache.parent if cache.parent.is_dir() else None) as tmp:
        staging = Path(tmp) / "cache"
        for config, splits in ds.configs.items():
            files = {}
            for split, docs in splits.items():
                files[split] = str(Path(tmp) / f"{config or 'default'}-{split}.jsonl")
                Path(files[split]).write_text("".join(json.dumps(d) + "\n" for d in docs))
            # datasets refuses local data_files under a hub repo_id: build under the bare name, then move the folder
            # to the namespaced one an online load creates (same relative layout and file names inside)
            builder = Json(cache_dir=str(staging), dataset_name=name, config_name=config or "default",
                           config_id=config or "default", hash=SHA[:16], data_files=files)
            builder.download_and_prepare()
            rel = Path(builder.cache_dir).relative_to(staging)
            dst = cache / (f"{org}___{rel.parts[0]}" if org else rel.parts[0]) / Path(*rel.parts[1:])
            if dst.exists():
                shutil.rmtree(dst)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(builder.cache_dir, dst)
            out.append(dst)
    return out


def write_videos(ds: HubDataset, root: Path, clips: Path) -> list[Path]:
    """Unpacked videos of ``ds`` under ``root`` (= ``$HF_HOME/<cache_dir>``)."""
    paths = []
    for rel, clip in ds.videos.items():
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_clip_file(clip, clips), dst)
        paths.append(dst)
    return paths


def write_snapshot(ds: HubDataset, hub: Path, clips: Path) -> Path:
    """The hub-cache snapshot of ``ds`` with its videos in one archive; returns the snapshot folder."""
    repo = hub / ("datasets--" + ds.repo.replace("/", "--"))
    snap = repo / "snapshots" / SHA
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ds.revision).write_text(SHA)
    (snap / "README.md").write_text(f"Tiny generated stand-in for {ds.repo} (vidcom2 harness tests).\n")
    members = {rel: _clip_file(clip, clips) for rel, clip in ds.videos.items()}
    if ds.archive.endswith(".tar"):
        whole = snap / ".whole.tar"
        with tarfile.open(whole, "w") as tar:
            for rel, src in members.items():
                tar.add(src, arcname=rel)
        data = whole.read_bytes()
        whole.unlink()
        half = len(data) // 2  # two parts, as the real LongVideoBench ships videos.tar.part.aa, ab, ...
        for part, chunk in (("aa", data[:half]), ("ab", data[half:])):
            (snap / f"{ds.archive}.part.{part}").write_bytes(chunk)
    else:
        with zipfile.ZipFile(snap / ds.archive, "w") as z:
            for rel, src in members.items():
                z.write(src, arcname=rel)
    return snap


def spec_digest() -> str:
    """SHA-256 (16 hex digits) of everything the hub is made from: every dataset's docs and video paths, the clip
    specs, the snapshot commit and the format; a change to any of them makes an existing hub stale."""
    payload = {
        "format": FORMAT, "sha": SHA,
        "datasets": {k: vars(f()) for k, f in DATASETS.items()},
        "clips": {n: vars(c) for n, c in td.CLIPS.items()},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def marker(hf_home: Path) -> dict | None:
    """The parsed marker of the tiny hub at ``hf_home``, or None when there is none (not a tiny hub, or unfinished)."""
    path = Path(hf_home) / MARKER
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_current(hf_home: Path) -> bool:
    """True when ``hf_home`` holds a complete tiny hub built from the current spec: all six datasets' annotations,
    with their videos unpacked or in snapshot archives (lmms-eval unpacks those on the first run, as from the hub)."""
    m = marker(hf_home)
    return bool(m) and m.get("digest") == spec_digest() and m.get("complete") is True


def build(hf_home: Path = DEFAULT, kinds: list[str] | None = None, unpack: bool = True, snapshot: bool = True) -> Path:
    """Write the tiny hub for ``kinds`` (default all six) into ``hf_home``; returns its absolute path."""
    home = Path(hf_home).resolve()
    (home / MARKER).unlink(missing_ok=True)  # a hub being (re)written is not a finished one
    clips = home / ".tiny_clips"
    for kind in kinds or list(DATASETS):
        ds = DATASETS[kind]()
        write_annotations(ds, home / "datasets")
        if snapshot:
            write_snapshot(ds, home / "hub", clips)
        if unpack:
            write_videos(ds, home / ds.cache_dir, clips)
    complete = (unpack or snapshot) and set(kinds or DATASETS) == set(DATASETS)
    info = {"format": FORMAT, "digest": spec_digest(), "complete": complete, "kinds": sorted(kinds or DATASETS),
            "unpacked": unpack, "snapshots": snapshot}
    _atomic_text(home / MARKER, json.dumps(info, indent=1, sort_keys=True) + "\n")
    return home


def ensure(hf_home: Path = DEFAULT) -> Path:
    """The complete tiny hub at ``hf_home``, built (or rebuilt) only when its marker is missing or stale."""
    home = Path(hf_home).resolve()
    return home if is_current(home) else build(home)


def _atomic_text(path: Path, text: str) -> None:
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def docs(kind: str) -> list[dict]:
    """Every doc of ``kind`` in the tiny hub, in config order (for tests' independent expectations)."""
    return [d for splits in DATASETS[kind]().configs.values() for ds in splits.values() for d in ds]
