"""Names of the store's numbered files: data segments are named by their start
position and index files by the first entry index they hold, both as 20
zero-padded decimal digits (``00000000001073741824``), so that a plain sort of
the names is a sort by number."""

from __future__ import annotations

from typing import Final

NAME_DIGITS: Final = 20


def file_name(number: int) -> str:
    """``number`` in 20 zero-padded decimal digits."""
    return f"{number:0{NAME_DIGITS}d}"


def parse_file_name(name: str) -> int | None:
    """The number a file name stands for, or None for a name the store did not write
    (temporary files and strangers are ignored, never deleted)."""
    if len(name) == NAME_DIGITS and name.isdigit():
        return int(name)
    return None
