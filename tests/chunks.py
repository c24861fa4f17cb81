"""Cutting a byte stream into the pieces a network might deliver (for the fuzz tests)."""


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (taken modulo its length); no empty piece (that would mean EOF)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for p in points + [len(data)]:
        pieces.append(data[start:p])
        start = p
    return [p for p in pieces if p]
