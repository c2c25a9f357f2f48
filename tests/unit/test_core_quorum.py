"""quorum.py against a naive reference (as etcd/raft's quorum quick test does)."""

from hypothesis import given, strategies as st

from raftmq.dledger.core import quorum


def naive_committed(matches: list[int]) -> int:
    # The largest index that at least a majority hold.
    best = 0
    for candidate in set(matches) | {0}:
        if sum(1 for m in matches if m >= candidate) >= len(matches) // 2 + 1:
            best = max(best, candidate)
    return best


@given(st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=7))
def test_committed_index_matches_naive_majority(matches: list[int]) -> None:
    assert quorum.committed_index({str(i): m for i, m in enumerate(matches)}) == naive_committed(matches)


@given(st.dictionaries(st.sampled_from("abcde"), st.booleans()))
def test_vote_result_matches_counting(votes: dict[str, bool]) -> None:
    voters = list("abcde")
    granted = sum(votes.get(v) is True for v in voters)
    refused = sum(votes.get(v) is False for v in voters)
    expected = True if granted >= 3 else False if refused >= 3 else None
    assert quorum.vote_result(votes, voters) is expected


def test_quorum_sizes() -> None:
    assert [quorum.quorum_size(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
