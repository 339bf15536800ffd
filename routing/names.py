"""What a team name and a job label may hold, decided once for specs, quotas, demotions and approvals.

A team name becomes part of Redis keys (``team:tier`` in the quota hash), of log lines and of the status page, so it
is a slug: lower-case ASCII letters, digits, ``-`` and ``_``, starting with a letter or digit, at most 63 characters
(a DNS label's length, so it can also name a Kubernetes namespace). A job label is free text for people, but only
printable characters (no newline to forge a log line, no bidi override to disguise one) and at most 128 of them.
"""

from __future__ import annotations

import re

TEAM_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
LABEL_MAX = 128
_TEAM = re.compile(TEAM_PATTERN)


def team_problem(team: str) -> str | None:
    """Why ``team`` cannot name a team, or None when it can: every door that stores a team name asks this."""
    if _TEAM.fullmatch(team):
        return None
    return f"team {team[:80]!r} must be 1-63 of a-z 0-9 - _, starting with a letter or digit"


def label_problem(label: str) -> str | None:
    """Why ``label`` cannot be a job's name, or None when it can."""
    if len(label) > LABEL_MAX:
        return f"name is {len(label)} characters long; at most {LABEL_MAX}"
    if not label.isprintable():
        return "name must hold printable characters only (no control or format characters)"
    return None
