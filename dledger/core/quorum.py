"""Majority arithmetic, kept apart so it can be checked against a naive reference."""

from __future__ import annotations

from typing import Iterable, Mapping


def quorum_size(voters: int) -> int:
    """The number of votes or acks that form a majority of ``voters``."""
    return voters // 2 + 1


def committed_index(match: Mapping[str, int]) -> int:
    """The highest index held by a majority, given each voter's match index.

    With matches sorted from high to low, the entry at position quorum-1 is held
    by at least a quorum of voters (§5.3, Figure 2 "Rules for Servers" last bullet).
    """
    ordered = sorted(match.values(), reverse=True)
    return ordered[quorum_size(len(ordered)) - 1]


def vote_result(votes: Mapping[str, bool], voters: Iterable[str]) -> bool | None:
    """True once a majority granted, False once a majority refused, else None."""
    voters = list(voters)
    need = quorum_size(len(voters))
    granted = sum(1 for v in voters if votes.get(v) is True)
    refused = sum(1 for v in voters if votes.get(v) is False)
    if granted >= need:
        return True
    if refused >= need:
        return False
    return None
