"""What a reader takes a name for: the Unicode TR39 skeleton, and the lab's fold on top of it.

Not a plugin (no hooks). The data is Unicode's own ``confusables.txt``, vendored unchanged in
``plugins/unicode/`` with its licence (its ``# Version:`` line is :data:`CONFUSABLES_VERSION`;
tests/test_skeleton.py checks it). To update: replace the file with a newer one from
https://www.unicode.org/Public/security/ and change the version the test expects.
"""
from __future__ import annotations

import functools
import re
import unicodedata
from importlib import resources

from forgelab.speedups.memo import short_memo

DATA = ("unicode", "confusables.txt")

# Default_Ignorable_Code_Point outside format characters (Cf): TR39 section 4 drops them first.
_IGNORABLE = frozenset(map(chr, (0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x3164, 0xFFA0, *range(0x180B, 0x1810),
                                 *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0))))
# Letters fonts draw alike that TR39 leaves apart (it maps "1" and "I" to "l", not "i"), and digits
# read as letters; applied after the skeleton, on lower case.
ASCII_FOLDS = str.maketrans({"i": "l", "!": "l", "0": "o", "3": "e", "4": "a", "5": "s", "7": "t",
                             "8": "b", "9": "g", "$": "s"})
ASCII_PAIRS = (("vv", "w"), ("cl", "d"), ("lc", "k"))  # two letters drawn as one (TR39 maps m to rn)
# A Latin letter with a hook, tail or descender, or in small capitals, that TR39 leaves alone
# (LATIN LETTER SMALL CAPITAL R, LATIN SMALL LETTER N WITH DESCENDER) reads as its base letter;
# so do these few that dnstwist's homoglyph table uses and that have no base letter in their name.
_DECORATED = re.compile(r"LATIN (?:SMALL |CAPITAL )?LETTER (?:SMALL CAPITAL )?([A-Z])(?: WITH .+)?")
_BASELESS = {"\u0138": "k", "\u014b": "n", "\u0185": "b", "\u01dd": "e", "\u00fe": "p"}  # kra, eng, tone six, turned e, thorn
# What a hasty reader merges: letters one stroke apart, and letters drawn as one (dnstwist's ASCII glyphs).
BLUR = str.maketrans({"d": "b", "c": "e", "v": "u", "q": "g"})
BLUR_PAIRS = (("uu", "w"), ("lh", "h"), ("lb", "b"))


@functools.cache
def _table() -> tuple[str, dict[str, str]]:
    """(version, {source character: prototype}) read once from the vendored file."""
    text = resources.files("forgelab.plugins").joinpath(*DATA).read_text(encoding="utf-8-sig")
    version, table = "", {}
    for line in text.splitlines():
        if line.startswith("# Version:"):
            version = line.split(":", 1)[1].strip()
        fields = line.split("#", 1)[0].split(";")
        if len(fields) >= 2 and fields[0].strip():
            table[chr(int(fields[0], 16))] = "".join(chr(int(cp, 16)) for cp in fields[1].split())
    return version, table


def confusables_version() -> str:
    """The Unicode version of the vendored ``confusables.txt`` (its ``# Version:`` line)."""
    return _table()[0]


@functools.lru_cache(maxsize=4096)
def _base_letter(ch: str) -> str:
    """The base letter a decorated Latin letter reads as, else the character itself."""
    if ch.isascii():
        return ch
    found = _DECORATED.fullmatch(unicodedata.name(ch, ""))
    return found.group(1).lower() if found else _BASELESS.get(ch, ch)


def _ignorable(ch: str) -> bool:
    return ch in _IGNORABLE or unicodedata.category(ch) == "Cf"


@short_memo()  # a pure function of a name; the protected ones come back every message
def skeleton(text: str) -> str:
    """The TR39 section 4 skeleton: NFD, default-ignorables dropped, each character replaced
    by its prototype from ``confusables.txt``, NFD again. Two strings are confusable when
    their skeletons are equal; a skeleton is for comparing, never for showing."""
    table = _table()[1]
    text = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFD", "".join(table.get(ch, ch) for ch in text if not _ignorable(ch)))


@short_memo()
def fold(text: str, pairs: bool = True) -> str:
    """What a reader of a domain takes ``text`` for: NFKC and case folded (fullwidth, ligatures),
    its TR39 skeleton, accents and other combining marks dropped (``â`` reads as ``a``), decorated
    Latin letters read as their base letter, lower case, then :data:`ASCII_FOLDS` and
    :data:`ASCII_PAIRS` (unless ``pairs`` is false: a pair can straddle two joined words). Linear
    in the text."""
    text = skeleton(unicodedata.normalize("NFKC", text).casefold())
    text = "".join(_base_letter(ch) for ch in text if unicodedata.category(ch) not in ("Mn", "Me"))
    text = text.lower().translate(ASCII_FOLDS)
    for pair, one in ASCII_PAIRS if pairs else ():
        text = text.replace(pair, one)
    return text


@short_memo()
def blur(text: str) -> str:
    """:func:`fold`, then letters one stroke apart merged (b/d, c/e, u/v, g/q) and letters
    drawn as one (uu, lh, lb): for counting typing slips between names of one suffix only, where
    ``dark`` for ``bank`` is a slip, never for saying two names read the same."""
    text = fold(text).translate(BLUR)
    for pair, one in BLUR_PAIRS:
        text = text.replace(pair, one)
    return text
