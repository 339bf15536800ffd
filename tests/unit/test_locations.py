"""Where a job may read from, decided at submit (tasks/locations.py): schemes, buckets, `..`, data roots, and a
remote caller that may not probe the host's files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import ConfigError, SpecRejected
from tasks.locations import Locations

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("file:///etc/passwd", "not file://"),
        ("http://169.254.169.254/latest/meta-data", "not http://"),
        ("https://example.com/data.yaml", "not https://"),
        ("s3:///x", "names no valid bucket"),
        ("s3://Bad_Bucket/x", "names no valid bucket"),
        ("s3://datasets/../other/x", "'..' segment"),
        ("s3://datasets/a/../../b", "'..' segment"),
    ],
)
def test_refused_whoever_asks(location: str, reason: str) -> None:
    for doors in (Locations(), Locations(remote=True)):
        with pytest.raises(SpecRejected, match=reason):
            doors.check("data", location)


@pytest.mark.parametrize("location", ["s3://datasets/shapes", "s3://yoloq/jobs/j-1/results/best.pt", "s3://a.b-c/"])
def test_s3_locations_pass_unchanged(location: str) -> None:
    assert Locations(remote=True).check("data", location) == location


def test_a_local_caller_without_roots_names_any_existing_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "d").mkdir()
    monkeypatch.chdir(tmp_path / "d")
    assert Locations().check("data", "../d") == str(tmp_path / "d")
    with pytest.raises(SpecRejected, match="does not exist"):
        Locations().check("data", str(tmp_path / "missing"))


def test_roots_confine_local_paths_without_saying_what_exists(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "shapes").mkdir(parents=True)
    doors = Locations.from_setting(f" {root} , /nonexistent-root ")
    assert doors.check("data", str(root / "shapes")) == str(root / "shapes")
    for outside in ("/etc/passwd", "/etc/no-such-file", str(root / ".." / ".." / "etc")):
        with pytest.raises(SpecRejected, match="is not under a data root") as refused:
            doors.check("data", outside)
        assert "exist" not in str(refused.value)
    (root / "escape").symlink_to("/etc")
    with pytest.raises(SpecRejected, match="is not under a data root"):
        doors.check("data", str(root / "escape" / "passwd"))


def test_a_remote_caller_names_local_paths_only_under_roots(tmp_path: Path) -> None:
    with pytest.raises(SpecRejected, match="local paths need YOLOQ_DATA_ROOTS"):
        Locations(remote=True).check("data", "/etc/passwd")
    doors = Locations.from_setting(str(tmp_path), remote=True)
    assert doors.check("data", str(tmp_path)) == str(tmp_path)


def test_relative_roots_are_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="absolute folders"):
        Locations.from_setting("data,/srv")
