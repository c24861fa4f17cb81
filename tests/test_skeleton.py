"""The TR39 skeleton over Unicode's vendored confusables.txt, and the reader's fold built on it."""
import unicodedata
from importlib import resources

from forgelab.plugins._skeleton import blur, confusables_version, fold, skeleton

DATA = resources.files("forgelab.plugins").joinpath("unicode")


def test_the_vendored_file_is_unicodes_with_its_version_and_licence():
    header = DATA.joinpath("confusables.txt").read_text(encoding="utf-8-sig").splitlines()[:10]
    assert header[0] == "# confusables.txt"
    assert "# Unicode Security Mechanisms for UTS #39" in header
    assert "# Version: 13.0.0" in header  # update this line with the file
    assert confusables_version() == "13.0.0"
    licence = DATA.joinpath("LICENSE.txt").read_text(encoding="utf-8")
    assert "UNICODE, INC. LICENSE AGREEMENT - DATA FILES AND SOFTWARE" in licence
    assert "version 13.0.0" in licence


def test_skeleton_is_tr39_section_4():
    assert skeleton("p\u0430ypal") == skeleton("paypal") == "paypal"  # Cyrillic a
    assert skeleton("m") == skeleton("rn") == "rn"  # the data maps m to its prototype rn
    assert skeleton("1") == skeleton("I") == skeleton("|") == "l"
    assert skeleton("0") == "O"  # prototypes keep case: the skeleton is for comparing only
    assert skeleton("\u00e2") == "a\u0302"  # NFD first: the mark stays, a skeleton keeps accents
    assert skeleton("\u0430\u0302") == skeleton("\u00e2")  # ... and NFD again after mapping
    assert skeleton("pay\u200bpal") == skeleton("pay\u00adpal") == "paypal"  # default-ignorables dropped
    assert skeleton("b\u0251nk") == "bank"  # LATIN SMALL LETTER ALPHA
    assert skeleton("bank") != skeleton("bonk")


def test_fold_is_what_a_reader_takes_a_domain_for():
    assert fold("b\u00e2nk") == fold("b\u00e0nk") == fold("bank") == "bank"  # marks dropped
    assert fold("\uff42\uff41\uff4e\uff4b") == "bank"  # fullwidth, through NFKC
    assert fold("BANK") == "bank"
    assert fold("b\u1d00\u0274\u1d0b") == "bank"  # small capitals TR39 leaves apart
    assert fold("ba\ua791k") == "bank"  # N WITH DESCENDER
    assert fold("g00gle") == fold("google") and fold("examp1e") == fold("example")
    assert fold("banlc") == "bank" and fold("banlc", False) == "banlc"
    assert fold("bank") != fold("bunk")


def test_blur_merges_letters_one_stroke_apart_only():
    assert blur("dank") == blur("bank") and blur("neuus") == blur("news")
    assert blur("park") != blur("bank") and blur("dark") != blur("bank")


def test_the_fold_of_every_character_is_short_and_has_no_marks():
    every = "".join(map(chr, range(0x20, 0x30000)))
    folded = fold(every)
    assert len(folded) < 4 * len(every)  # linear: NFKC and the prototypes expand a little at most
    assert not any(unicodedata.category(ch) in ("Mn", "Me") for ch in folded)
