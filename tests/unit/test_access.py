"""Who may do what through the HTTP API (routing/access.py): scopes, teams, key names — table-driven."""

from __future__ import annotations

import pytest

from routing.access import ROOT, Principal, key_problem, refusal

pytestmark = pytest.mark.unit

SUBMIT_A = Principal("a-ci", "team-a", frozenset({"submit"}))
OPS_A = Principal("a-ops", "team-a", frozenset({"operate"}))
APPROVER = Principal("lead", "*", frozenset({"approve"}))
CAMERA = Principal("line-7", "vision", frozenset({"detect"}))
CAMERA_CI = Principal("line-ci", "vision", frozenset({"detect", "submit"}))


@pytest.mark.parametrize(
    ("who", "action", "team", "reason"),
    [
        (SUBMIT_A, "submit", "team-a", ""),
        (SUBMIT_A, "submit", "team-b", "key 'a-ci' acts for team team-a, not for team team-b"),
        (SUBMIT_A, "cancel", "team-a", ""),  # its own team's jobs
        (SUBMIT_A, "cancel", "team-b", "key 'a-ci' acts for team team-a, not for team team-b"),
        (SUBMIT_A, "promote", "team-a", "key 'a-ci' may not promote: that needs the admin or operate scope"),
        (SUBMIT_A, "approve", None, "key 'a-ci' may not approve: that needs the admin or approve scope"),
        (OPS_A, "freeze", "team-a", ""),
        (OPS_A, "submit", "team-a", "key 'a-ops' may not submit: that needs the admin or submit scope"),
        (APPROVER, "approve", "team-z", ""),  # '*' acts for every team
        (APPROVER, "admin", None, "key 'lead' may not admin: that needs the admin scope"),  # no rule: admin only
        (ROOT, "admin", "team-z", ""),
        (ROOT, "approve", "team-z", ""),
        (CAMERA, "detect", None, ""),
        (CAMERA, "read", None, "key 'line-7' may not read: that needs the admin or approve or operate or submit scope"),
        (CAMERA, "submit", "vision", "key 'line-7' may not submit: that needs the admin or submit scope"),
        (CAMERA_CI, "read", None, ""),  # any other scope beside detect reads, as before
        (SUBMIT_A, "read", None, ""),
        (OPS_A, "detect", None, "key 'a-ops' may not detect: that needs the admin or detect scope"),
        (ROOT, "detect", None, ""),
        (ROOT, "read", None, ""),
    ],
)
def test_refusal(who: Principal, action: str, team: str | None, reason: str) -> None:
    assert refusal(who, action, team) == reason


def test_a_key_is_recorded_by_its_name() -> None:
    assert SUBMIT_A.identity == "key:a-ci" and ROOT.identity == "key:admin"


@pytest.mark.parametrize(
    ("name", "team", "scopes", "problem"),
    [
        ("ci-vision", "vision", ["submit"], None),
        ("root2", "*", ["admin"], None),
        ("Bad Name", "vision", ["submit"], "key name 'Bad Name' must be 1-63 of a-z 0-9 - _"),
        ("admin", "*", ["admin"], "key name 'admin' is taken by YOLOQ_API_TOKEN"),
        ("ci", "Bad Team", ["submit"], "team 'Bad Team' must be 1-63 of a-z 0-9 - _"),
        ("camera", "vision", ["detect"], None),
        ("ci", "vision", ["submit", "x"], "unknown scope(s) x; scopes are submit, operate, approve, detect, admin"),
        ("ci", "vision", [], "a key needs at least one scope"),
        ("ci", "vision", ["admin"], "an admin key acts for every team: give it --team '*'"),
    ],
)
def test_key_problem(name: str, team: str, scopes: list[str], problem: str | None) -> None:
    found = key_problem(name, team, scopes)
    assert (found is None) if problem is None else (found is not None and found.startswith(problem)), found
