"""What no correct peer can send, whatever the receiver's state: a term or
index beyond the bounds of ``messages`` (``MAX_TERM``, ``MAX_INDEX``), entries
that do not follow their ``prev_log_index`` or whose terms exceed their
leader's or go down, a snapshot of a term above its sender's.

``dledger.codec`` refuses most of this on the wire already; these checks keep
the core safe behind any transport (the in-memory one carries objects, not
frames). ``RaftCore.step`` adds the checks that depend on its own state.
"""

from __future__ import annotations

from raftmq.dledger.core.messages import MAX_INDEX, MAX_TERM, AppendEntries, InstallSnapshot, Message


def malformed(m: Message) -> str | None:
    """Why ``m`` is impossible from any correct peer, or None."""
    if m.term > MAX_TERM:
        return f"term {m.term} beyond the largest term {MAX_TERM}"
    if isinstance(m, AppendEntries):
        return _malformed_append(m)
    if isinstance(m, InstallSnapshot):
        meta = m.snapshot.meta
        if meta.index > MAX_INDEX or meta.term > m.term or meta.index == 0:
            return f"snapshot of index {meta.index} and term {meta.term} from a leader of term {m.term}"
    return None


def _malformed_append(m: AppendEntries) -> str | None:
    if m.prev_log_index > MAX_INDEX or m.leader_commit > MAX_INDEX:
        return f"an index beyond the largest index {MAX_INDEX}"
    if m.prev_log_term > m.term:
        return f"prev_log_term {m.prev_log_term} above the leader's term {m.term}"
    expect, floor = m.prev_log_index + 1, m.prev_log_term
    for e in m.entries:
        if e.index != expect or not floor <= e.term <= m.term or e.index > MAX_INDEX:
            return (f"entry {e.index} of term {e.term}: entries must follow index {m.prev_log_index} "
                    f"with terms in {m.prev_log_term}..{m.term}, never decreasing")
        expect, floor = expect + 1, e.term
    return None
