"""tasks/datasets.py: local and S3 datasets become a per-attempt data.yaml with an absolute root, or a DatasetError
that says what is wrong; S3 datasets are fetched once per content version into the cache."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.fakes import MemoryStore
from tasks.datasets import key_path, read_data_yaml, resolve, split_s3
from tasks.errors import DatasetError

pytestmark = pytest.mark.unit

YAML = "train: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n"


def _tree(root: Path, data_yaml: str | None = YAML) -> Path:
    """A minimal dataset folder: image and label splits, plus data.yaml unless None."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "images" / split / "00000.jpg").write_bytes(b"jpeg")
        (root / "labels" / split).mkdir(parents=True)
        (root / "labels" / split / "00000.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    if data_yaml is not None:
        (root / "data.yaml").write_text(data_yaml)
    return root


def _read(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


class CountingStore(MemoryStore):
    """Counts every download."""

    def __init__(self) -> None:
        super().__init__()
        self.gets: list[tuple[str | None, str]] = []

    def get_file(self, key: str, path: Path, bucket: str | None = None) -> bool:
        self.gets.append((bucket, key))
        return super().get_file(key, path, bucket)


def _upload(store: MemoryStore, bucket: str, prefix: str, data_yaml: str = YAML) -> dict[str, bytes]:
    objects = {
        f"{prefix}data.yaml": data_yaml.encode(),
        f"{prefix}images/train/00000.jpg": b"train-jpeg",
        f"{prefix}images/val/00000.jpg": b"val-jpeg",
        f"{prefix}labels/train/00000.txt": b"0 0.5 0.5 0.2 0.2\n",
        f"{prefix}labels/val/00000.txt": b"1 0.5 0.5 0.2 0.2\n",
    }
    target = store.objects if bucket == store.bucket else store.other_buckets.setdefault(bucket, {})
    target.update(objects)
    return objects


# --- local datasets -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("as_yaml", [False, True], ids=["folder", "data.yaml"])
def test_local_dataset_gets_a_per_attempt_yaml_with_an_absolute_root(tmp_path: Path, as_yaml: bool) -> None:
    root = _tree(tmp_path / "ds")
    work = tmp_path / "attempt-1"
    data = str(root / "data.yaml") if as_yaml else str(root)
    ds = resolve(data, MemoryStore(), tmp_path / "cache", work)
    assert ds.uri == data
    assert ds.root == root.resolve()
    assert ds.data_yaml == work / "data.yaml"
    doc = _read(ds.data_yaml)
    assert doc["path"] == str(root.resolve())
    assert Path(doc["path"]).is_absolute()
    assert (doc["train"], doc["val"], doc["names"]) == ("images/train", "images/val", {0: "cat", 1: "dog"})
    assert (root / "data.yaml").read_text() == YAML, "the user's data.yaml is never rewritten"


@pytest.mark.parametrize(
    ("path_line", "where"),
    [
        ("path: .\n", "ds"),
        ("path: ../elsewhere\n", "elsewhere"),
        ("path: real\n", "ds/real"),
        ("path:\n", "ds"),
    ],
    ids=["dot", "parent-sibling", "subdir", "empty"],
)
def test_relative_path_is_resolved_against_the_yamls_folder(tmp_path: Path, path_line: str, where: str) -> None:
    target = tmp_path / where
    if where != "ds":
        _tree(target, data_yaml=None)
    (tmp_path / "ds").mkdir(exist_ok=True)
    if where == "ds":
        _tree(tmp_path / "ds", data_yaml=None)
    (tmp_path / "ds" / "data.yaml").write_text(path_line + YAML)
    # Run from a different working directory so a cwd-relative resolution would be caught.
    ds = resolve(str(tmp_path / "ds" / "data.yaml"), MemoryStore(), tmp_path / "cache", tmp_path / "work")
    assert ds.root == target.resolve()
    assert _read(ds.data_yaml)["path"] == str(target.resolve())


def test_relative_path_does_not_depend_on_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tree(tmp_path / "ds" / "sub", data_yaml=None)
    (tmp_path / "ds" / "data.yaml").write_text("path: sub\n" + YAML)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    ds = resolve(str(tmp_path / "ds"), MemoryStore(), tmp_path / "cache", tmp_path / "work")
    assert ds.root == (tmp_path / "ds" / "sub").resolve()


def test_absolute_path_in_yaml_is_kept(tmp_path: Path) -> None:
    elsewhere = _tree(tmp_path / "real")
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "data.yaml").write_text(f"path: {elsewhere}\n" + YAML)
    ds = resolve(str(tmp_path / "ds"), MemoryStore(), tmp_path / "cache", tmp_path / "work")
    assert ds.root == elsewhere.resolve()


def test_list_splits_are_checked_entry_by_entry(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ds", data_yaml="train: [images/train, images/val]\nval: images/val\nnames: [a]\n")
    ds = resolve(str(root), MemoryStore(), tmp_path / "cache", tmp_path / "work")
    assert _read(ds.data_yaml)["train"] == ["images/train", "images/val"]
    (root / "data.yaml").write_text("train: [images/train, images/extra]\nval: images/val\nnames: [a]\n")
    with pytest.raises(DatasetError, match="train split 'images/extra' not found"):
        resolve(str(root), MemoryStore(), tmp_path / "cache", tmp_path / "work")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "has no data.yaml at"),
        ("train: [images/train\nval: x\n", "malformed data.yaml .*: "),
        ("", "expected a mapping"),
        ("- train\n- val\n", "expected a mapping"),
        ("just a string\n", "expected a mapping"),
        ("val: images/val\nnames: [a]\n", "missing train$"),
        ("train: images/train\nnames: [a]\n", "missing val$"),
        ("train: images/train\nval: images/val\n", "missing names$"),
        ("names: [a]\n", "missing train, val$"),
        ("train: images/nope\nval: images/val\nnames: [a]\n", "train split 'images/nope' not found under"),
        ("train: images/train\nval: images/gone\nnames: [a]\n", "val split 'images/gone' not found under"),
    ],
    ids=[
        "no-yaml",
        "bad-yaml",
        "empty",
        "list",
        "scalar",
        "no-train",
        "no-val",
        "no-names",
        "two-missing",
        "no-train-dir",
        "no-val-dir",
    ],
)
def test_bad_local_datasets_raise_dataset_error(tmp_path: Path, content: str | None, match: str) -> None:
    root = _tree(tmp_path / "ds", data_yaml=content)
    with pytest.raises(DatasetError, match=match):
        resolve(str(root), MemoryStore(), tmp_path / "cache", tmp_path / "work")
    assert not (tmp_path / "work" / "data.yaml").exists()


def test_a_dataset_that_does_not_exist_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DatasetError, match=f"dataset {missing} does not exist"):
        resolve(str(missing), MemoryStore(), tmp_path / "cache", tmp_path / "work")


def test_a_non_utf8_yaml_is_malformed(tmp_path: Path) -> None:
    root = _tree(tmp_path / "ds", data_yaml=None)
    (root / "data.yaml").write_bytes(b"train: \xff\xfe\n")
    with pytest.raises(DatasetError, match=r"malformed data\.yaml"):
        read_data_yaml(root / "data.yaml")


def test_read_data_yaml_returns_the_document(tmp_path: Path) -> None:
    (tmp_path / "data.yaml").write_text(YAML)
    assert read_data_yaml(tmp_path / "data.yaml") == {
        "train": "images/train",
        "val": "images/val",
        "names": {0: "cat", 1: "dog"},
    }


# --- S3 datasets ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bucket", ["mem", "datasets"], ids=["own-bucket", "other-bucket"])
def test_s3_dataset_is_fetched_into_the_cache(tmp_path: Path, bucket: str) -> None:
    store = MemoryStore()
    objects = _upload(store, bucket, "shapes/v1/")
    cache = tmp_path / "cache"
    ds = resolve(f"s3://{bucket}/shapes/v1", store, cache, tmp_path / "work")
    assert ds.root.parent == (cache / "datasets").resolve()
    for key, data in objects.items():
        assert (ds.root / key.removeprefix("shapes/v1/")).read_bytes() == data
    assert (ds.root / ".complete").exists()
    assert _read(ds.data_yaml)["path"] == str(ds.root)
    assert not list((cache / "datasets").glob("*.partial"))


def test_s3_dataset_is_fetched_once_and_reused(tmp_path: Path) -> None:
    store = CountingStore()
    objects = _upload(store, "datasets", "shapes/")
    cache = tmp_path / "cache"
    first = resolve("s3://datasets/shapes/", store, cache, tmp_path / "attempt-1")
    assert len(store.gets) == len(objects)
    assert all(bucket == "datasets" for bucket, _ in store.gets)
    second = resolve("s3://datasets/shapes", store, cache, tmp_path / "attempt-2")
    assert len(store.gets) == len(objects), "an unchanged dataset is not downloaded again"
    assert second.root == first.root
    assert second.data_yaml != first.data_yaml, "every attempt gets its own data.yaml"
    assert _read(second.data_yaml) == _read(first.data_yaml)


def test_a_changed_object_gives_a_new_cache_version(tmp_path: Path) -> None:
    store = CountingStore()
    objects = _upload(store, "datasets", "shapes/")
    cache = tmp_path / "cache"
    first = resolve("s3://datasets/shapes/", store, cache, tmp_path / "attempt-1")
    store.other_buckets["datasets"]["shapes/labels/train/00000.txt"] = b"1 0.4 0.4 0.1 0.1\n"
    second = resolve("s3://datasets/shapes/", store, cache, tmp_path / "attempt-2")
    assert second.root != first.root
    assert second.root.name.split("-")[0] == first.root.name.split("-")[0], "same URI hash, new version"
    assert len(store.gets) == 2 * len(objects)
    assert (second.root / "labels/train/00000.txt").read_bytes() == b"1 0.4 0.4 0.1 0.1\n"
    assert (first.root / "labels/train/00000.txt").read_bytes() == b"0 0.5 0.5 0.2 0.2\n"


def test_a_new_object_gives_a_new_cache_version(tmp_path: Path) -> None:
    store = MemoryStore()
    _upload(store, "datasets", "shapes/")
    first = resolve("s3://datasets/shapes/", store, tmp_path / "cache", tmp_path / "a1")
    store.other_buckets["datasets"]["shapes/images/train/00001.jpg"] = b"more"
    second = resolve("s3://datasets/shapes/", store, tmp_path / "cache", tmp_path / "a2")
    assert second.root != first.root
    assert (second.root / "images/train/00001.jpg").read_bytes() == b"more"


def test_an_interrupted_fetch_is_redone_not_trusted(tmp_path: Path) -> None:
    store = CountingStore()
    objects = _upload(store, "datasets", "shapes/")
    cache = tmp_path / "cache"
    first = resolve("s3://datasets/shapes/", store, cache, tmp_path / "a1")
    (first.root / ".complete").unlink()
    second = resolve("s3://datasets/shapes/", store, cache, tmp_path / "a2")
    assert second.root == first.root
    assert len(store.gets) == 2 * len(objects)
    assert (second.root / ".complete").exists()


@pytest.mark.parametrize(
    "layout",
    [
        {},
        {"shapes/images/train/00000.jpg": b"x"},
        {"shapes/nested/data.yaml": YAML.encode()},
        {"shapes/my-data.yaml": YAML.encode()},
    ],
    ids=["empty-prefix", "no-yaml", "yaml-not-at-top", "similar-name"],
)
def test_an_s3_prefix_without_a_top_level_data_yaml_is_refused(tmp_path: Path, layout: dict[str, bytes]) -> None:
    store = CountingStore()
    store.other_buckets["datasets"] = dict(layout)
    with pytest.raises(DatasetError, match=r"s3://datasets/shapes/ does not exist or has no data\.yaml at its top"):
        resolve("s3://datasets/shapes/", store, tmp_path / "cache", tmp_path / "work")
    assert store.gets == []


def test_a_sibling_prefix_is_not_part_of_the_dataset(tmp_path: Path) -> None:
    store = MemoryStore()
    _upload(store, "datasets", "shapes/")
    store.other_buckets["datasets"]["shapes-v2/data.yaml"] = b"other"
    ds = resolve("s3://datasets/shapes", store, tmp_path / "cache", tmp_path / "work")
    assert not (ds.root.parent / "shapes-v2").exists()
    assert sorted(p.name for p in ds.root.iterdir()) == [".complete", "data.yaml", "images", "labels"]


def test_a_path_in_an_uploaded_yaml_is_replaced_by_the_cache_dir(tmp_path: Path) -> None:
    uploader = _tree(tmp_path / "uploader-laptop")  # the uploader's path exists here, and must still be ignored
    store = MemoryStore()
    _upload(store, "datasets", "shapes/", data_yaml=f"path: {uploader}\n" + YAML)
    ds = resolve("s3://datasets/shapes/", store, tmp_path / "cache", tmp_path / "work")
    assert ds.root != uploader.resolve()
    assert ds.root.is_relative_to((tmp_path / "cache").resolve())
    assert _read(ds.data_yaml)["path"] == str(ds.root)


def test_an_s3_dataset_with_a_missing_split_is_refused(tmp_path: Path) -> None:
    store = MemoryStore()
    _upload(store, "datasets", "shapes/", data_yaml="train: images/train\nval: images/test\nnames: [a]\n")
    with pytest.raises(DatasetError, match=r"dataset s3://datasets/shapes/: val split 'images/test' not found"):
        resolve("s3://datasets/shapes/", store, tmp_path / "cache", tmp_path / "work")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/prefix/", ("bucket", "prefix/")),
        ("s3://bucket/prefix", ("bucket", "prefix/")),
        ("s3://bucket/a/b/c//", ("bucket", "a/b/c/")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket", ("bucket", "")),
    ],
)
def test_split_s3(uri: str, expected: tuple[str, str]) -> None:
    assert split_s3(uri) == expected


@pytest.mark.parametrize("uri", ["s3://", "s3:///prefix/"])
def test_split_s3_without_a_bucket(uri: str) -> None:
    with pytest.raises(DatasetError, match="names no bucket"):
        split_s3(uri)


def test_folder_markers_are_skipped(tmp_path: Path) -> None:
    """S3 consoles create zero-byte ``dir/`` objects; they are folders, not files to download."""
    store = CountingStore()
    objects = _upload(store, "datasets", "shapes/")
    markers = {"shapes/": b"", "shapes/images/": b"", "shapes/labels/train/": b""}
    store.other_buckets["datasets"].update(markers)
    ds = resolve("s3://datasets/shapes/", store, tmp_path / "cache", tmp_path / "work")
    assert sorted(key for _, key in store.gets) == sorted(objects)
    assert (ds.root / "images" / "train" / "00000.jpg").read_bytes() == b"train-jpeg"


@pytest.mark.parametrize(
    "key",
    ["shapes/../../escaped.txt", "shapes/images/../../../escaped.txt", "shapes//tmp/escaped.txt"],
    ids=["dotdot", "nested-dotdot", "absolute"],
)
def test_a_key_that_would_escape_the_cache_is_refused(tmp_path: Path, key: str) -> None:
    store = MemoryStore()
    _upload(store, "datasets", "shapes/")
    store.other_buckets["datasets"][key] = b"evil"
    cache = tmp_path / "deep" / "er" / "cache"
    with pytest.raises(DatasetError, match="would be written outside the local copy"):
        resolve("s3://datasets/shapes/", store, cache, tmp_path / "work")
    assert list(tmp_path.rglob("escaped.txt")) == []


@pytest.mark.parametrize(
    ("prefix", "key", "expected"),
    [
        ("p/", "p/data.yaml", "data.yaml"),
        ("p/", "p/images/train/a.jpg", "images/train/a.jpg"),
        ("", "top.jpg", "top.jpg"),
        ("p/", "p/a..b.jpg", "a..b.jpg"),
        ("p/", "p/", None),
        ("p/", "p/images/", None),
    ],
)
def test_key_path(prefix: str, key: str, expected: str | None) -> None:
    assert key_path("s3://b/p/", prefix, key) == expected


@pytest.mark.parametrize(
    ("first", "second"),
    [("s3://datasets/shapes/", "s3://datasets/shapes"), ("s3://datasets/shapes", "s3://datasets/shapes//")],
)
def test_spellings_of_one_prefix_share_one_cached_copy(tmp_path: Path, first: str, second: str) -> None:
    store = CountingStore()
    objects = _upload(store, "datasets", "shapes/")
    a = resolve(first, store, tmp_path / "cache", tmp_path / "a1")
    b = resolve(second, store, tmp_path / "cache", tmp_path / "a2")
    assert a.root == b.root
    assert len(store.gets) == len(objects)


def test_identical_content_in_two_buckets_is_cached_apart(tmp_path: Path) -> None:
    store = MemoryStore()
    _upload(store, "one", "shapes/")
    _upload(store, "two", "shapes/")
    a = resolve("s3://one/shapes/", store, tmp_path / "cache", tmp_path / "a1")
    b = resolve("s3://two/shapes/", store, tmp_path / "cache", tmp_path / "a2")
    assert a.root != b.root


# --- a dataset is data, never code or a way out of its folder --------------------------------------------------------


def test_an_uploaded_download_script_never_reaches_ultralytics(tmp_path: Path) -> None:
    # Given an S3 dataset whose data.yaml carries a `download` that Ultralytics would exec when a split is missing
    from ultralytics.data.utils import check_det_dataset

    marker = tmp_path / "ran"
    store = MemoryStore()
    _upload(store, "datasets", "evil/", data_yaml=YAML + f"download: open({str(marker)!r}, 'w').close()\n")
    ds = resolve("s3://datasets/evil/", store, tmp_path / "cache", tmp_path / "work")
    # When the attempt's data.yaml is handed to Ultralytics and a split has gone missing meanwhile
    assert "download" not in _read(ds.data_yaml)
    shutil.rmtree(ds.root / "images" / "val")
    with pytest.raises(FileNotFoundError):
        check_det_dataset(str(ds.data_yaml))
    # Then the script never ran: Ultralytics had nothing to run
    assert not marker.exists()


@pytest.mark.parametrize("entry", ["../../outside", "/etc", "images/../../outside"])
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_a_split_outside_the_datasets_folder_is_refused(tmp_path: Path, split: str, entry: str) -> None:
    (tmp_path / "outside").mkdir()
    doc = yaml.safe_load(YAML)
    doc[split] = entry
    root = _tree(tmp_path / "a" / "b", yaml.safe_dump(doc))
    with pytest.raises(DatasetError, match=f"{split} split .* is outside the dataset's folder"):
        resolve(str(root), MemoryStore(), tmp_path / "cache", tmp_path / "work")


def test_an_empty_test_split_is_no_split(tmp_path: Path) -> None:
    root = _tree(tmp_path / "d", YAML + "test: \n")
    assert resolve(str(root), MemoryStore(), tmp_path / "cache", tmp_path / "work").root == root.resolve()
