"""tasks/states.py: the lifecycle table is consistent and terminal states are final."""

from __future__ import annotations

import pytest

from tasks.states import TERMINAL, TRANSITIONS, JobState, sources_of

pytestmark = pytest.mark.unit

H, Q, R, P = JobState.HELD, JobState.QUEUED, JobState.RUNNING, JobState.PREEMPTING
S, F, C = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED


def test_states_are_lowercase_strings() -> None:
    assert [s.value for s in JobState] == [
        "held",
        "queued",
        "running",
        "preempting",
        "succeeded",
        "failed",
        "cancelled",
    ]


def test_every_state_is_in_the_table() -> None:
    assert set(TRANSITIONS) == set(JobState)
    assert all(dsts <= set(JobState) for dsts in TRANSITIONS.values())


def test_terminal_states() -> None:
    assert frozenset({S, F, C}) == TERMINAL


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_have_no_exits(state: JobState) -> None:
    assert TRANSITIONS[state] == frozenset()


@pytest.mark.parametrize("state", sorted(set(JobState) - TERMINAL))
def test_non_terminal_states_can_end(state: JobState) -> None:
    assert TRANSITIONS[state]
    seen, frontier = {state}, [state]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen & TERMINAL
    assert C in TRANSITIONS[state]  # every live job can be cancelled


@pytest.mark.parametrize("target", list(JobState))
def test_sources_of_is_consistent_with_transitions(target: JobState) -> None:
    sources = sources_of(target)
    assert isinstance(sources, frozenset)
    for src in JobState:
        assert (src in sources) == (target in TRANSITIONS[src]), (src, target)


@pytest.mark.parametrize(
    ("target", "sources"),
    [
        (H, {Q, R, P}),  # a reclaimed loan (routing.borrowing)
        (Q, {H, Q, R, P}),
        (R, {Q}),
        (P, {R}),
        (S, {R, P}),
        (F, {Q, R, P}),
        (C, {H, Q, R, P}),
    ],
)
def test_sources_of_table(target: JobState, sources: set[JobState]) -> None:
    assert sources_of(target) == sources


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        (H, Q),
        (Q, R),
        (R, P),
        (P, Q),
        (R, S),
        (R, F),
        (R, Q),
        (H, C),
        (Q, C),
        (R, C),
        (P, C),
        (P, S),
        (Q, H),
        (R, H),
        (P, H),
    ],
)
def test_documented_edges_are_allowed(src: JobState, dst: JobState) -> None:
    assert dst in TRANSITIONS[src]


@pytest.mark.parametrize(
    ("src", "dst"),
    [(H, R), (H, P), (H, S), (Q, S), (Q, P), (P, R), (P, P), (S, Q), (F, Q), (C, Q), (S, F)],
)
def test_forbidden_edges(src: JobState, dst: JobState) -> None:
    assert dst not in TRANSITIONS[src]
