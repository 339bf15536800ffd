"""Who may do what through the HTTP API (pure): an API key's scopes and team, and what each action needs.

A key (``yq_<id>_<secret>``, stored hashed by ``infra.api_keys``) has a name, a team (``*``: every team) and scopes:

- ``submit``: submit jobs for its team, and cancel its team's jobs;
- ``operate``: cancel, preempt, freeze/unfreeze and promote its team's jobs; move model aliases (``model``);
- ``submit`` or ``operate``: add, remove and test its team's webhooks (``webhook``);
- ``approve``: approve its team's held critical jobs and promotions to critical (never a job it submitted or
  promoted itself: four-eyes, ``routing.admission.self_approval``);
- ``detect``: call the detect API (``POST /v1/models/{alias}/detect``) and nothing else, not even reads: a key baked
  into a camera or a line-side service should open no view of the fleet or of other teams' jobs;
- ``admin``: every action, for every team (so an admin key's team is always ``*``).

A key with any scope but ``detect`` may read (jobs, fleet views, the status page, metrics: the ``read`` action). What a
key does is recorded as ``key:<name>``.
``YOLOQ_API_TOKEN`` is the key named ``admin``: all scopes, every team.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from routing.names import team_problem

SCOPES = ("submit", "operate", "approve", "detect", "admin")
ADMIN = "admin"
ALL_TEAMS = "*"
KEY_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_KEY_NAME = re.compile(KEY_NAME_PATTERN)

# Action → the scopes that allow it besides ``admin`` (an action missing here needs ``admin``).
ACTIONS: dict[str, frozenset[str]] = {
    "submit": frozenset({"submit"}),
    "cancel": frozenset({"submit", "operate"}),
    "preempt": frozenset({"operate"}),
    "freeze": frozenset({"operate"}),
    "unfreeze": frozenset({"operate"}),
    "promote": frozenset({"operate"}),
    "model": frozenset({"operate"}),  # move a model alias: set, canary, promote, rollback
    "approve": frozenset({"approve"}),
    "detect": frozenset({"detect"}),
    "webhook": frozenset({"submit", "operate"}),  # add, remove, test its team's webhooks (yoloq.http.webhooks)
    "read": frozenset({"submit", "operate", "approve"}),  # every scope but detect (a detect key reads nothing)
}


@dataclass(frozen=True, slots=True)
class Principal:
    """The holder of one API key, as the gate authenticated it."""

    name: str
    team: str
    scopes: frozenset[str]

    @property
    def identity(self) -> str:
        """What job histories and the audit log name as ``by``: the key, never a shared ``api``."""
        return f"key:{self.name}"

    def may(self, action: str) -> bool:
        """Whether the key's scopes allow ``action`` at all (its team is checked per job)."""
        return ADMIN in self.scopes or bool(self.scopes & ACTIONS.get(action, frozenset()))


ROOT = Principal(ADMIN, ALL_TEAMS, frozenset({ADMIN}))  # YOLOQ_API_TOKEN


def refusal(principal: Principal, action: str, team: str | None = None) -> str:
    """Why ``principal`` may not take ``action`` (on a job of ``team``), or "" when it may: one rule for every route."""
    if not principal.may(action):
        needs = " or ".join(sorted(ACTIONS.get(action, frozenset()) | {ADMIN}))
        return f"key {principal.name!r} may not {action}: that needs the {needs} scope"
    if team is not None and principal.team not in (ALL_TEAMS, team):
        return f"key {principal.name!r} acts for team {principal.team}, not for team {team}"
    return ""


def key_problem(name: str, team: str, scopes: Iterable[str]) -> str | None:
    """Why a key with this name, team and scopes cannot be created, or None: checked before anything is stored."""
    wanted = set(scopes)
    bad_team = None if team == ALL_TEAMS else team_problem(team)
    unknown = ", ".join(sorted(wanted - set(SCOPES)))
    checks = (
        (not _KEY_NAME.fullmatch(name), f"key name {name[:80]!r} must be 1-63 of a-z 0-9 - _, starting with a "
                                         "letter or digit"),
        (name == ADMIN, "key name 'admin' is taken by YOLOQ_API_TOKEN"),
        (bad_team is not None, f"{bad_team} (or '*' for every team)"),
        (bool(unknown), f"unknown scope(s) {unknown}; scopes are {', '.join(SCOPES)}"),
        (not wanted, f"a key needs at least one scope ({', '.join(SCOPES)})"),
        (ADMIN in wanted and team != ALL_TEAMS, "an admin key acts for every team: give it --team '*'"),
    )  # fmt: skip
    return next((reason for failed, reason in checks if failed), None)
