"""Sender domains that imitate a protected one, and invisible or bidi characters in headers."""
from __future__ import annotations

import functools
import re
import unicodedata

import forgelab
from forgelab.speedups.memo import short_memo

from ._domains import domain_of, normalise_domain, public_suffix
from ._facts import facts
from ._findings import finding, show, verdict
from ._mailbox import decode_words
from ._skeleton import blur, fold

LAB_DOMAINS = ("bank.example", "shop.example", "news.example", "insure.example")

# Words that phishing domains join to a brand (``banklogin``, ``update-bank``): dnstwist's
# dictionaries/english.dict (its list of the words most used in targeted phishing) and a few more.
LURE_WORDS = (
    "auth", "access", "account", "agree", "cdn", "choose", "claim", "cl", "click", "confirm", "confirmation",
    "connect", "download", "enroll", "find", "http", "https", "install", "login", "mail", "my", "online",
    "payment", "payments", "recovery", "register", "ssl", "safe", "secure", "security", "service", "services",
    "signin", "support", "summary", "update", "user", "verify", "verification", "view", "ww", "www",
    # the lab's additions
    "test", "help", "helpdesk", "alert", "alerts", "notice", "billing", "portal", "customer", "client",
    "wallet", "invoice", "official", "reset", "password", "unlock", "logon", "signon", "sso", "verified",
    "validate",
)
# A protected name this long (in letters) is matched anywhere inside a label: long names are
# rarely part of another word. A shorter one (bank, shop) only next to hyphens or the words above,
# so workshop, foxnews and bankrate are not taken for shop, news and bank.
EMBED_ANYWHERE = 7
LABEL_MAX, NAME_MAX = 63, 253  # RFC 1035: a longer label or name is no DNS name; the searches skip it

# Reverse the reading order of text (Trojan Source); shown wherever they appear.
BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)}
# Invisible or space-like: hide or pad parts of an address.
INVISIBLE = {chr(c) for c in (*range(0x2000, 0x200E), 0x2028, 0x2029, 0x205F, *range(0x2060, 0x2065),
                              0xFEFF, 0x00AD, 0x180E, 0x3164, 0x115F, 0x1160, 0x034F)}
ADDRESS_FIELDS = ("from", "sender", "reply-to", "to", "cc")
# The same sets as one regex each: nearly every header holds none, found without a Python loop.
_BIDI_RE = re.compile("[" + "".join(map(re.escape, sorted(BIDI))) + "]")
_HIDDEN_RE = re.compile("[" + "".join(map(re.escape, sorted(BIDI | INVISIBLE))) + "]")
_CHECKED = 50  # distinct sender domains looked at; a From with thousands is a fail elsewhere


def distance_within(a: str, b: str, limit: int) -> int:
    """The optimal string alignment distance (insertions, deletions, substitutions,
    swaps) when it is at most ``limit``, else ``limit + 1``.

    Only cells within ``limit`` of the diagonal are computed: an alignment that costs
    at most ``limit`` never leaves that band (a swap stays on its diagonal).
    """
    over = limit + 1
    if abs(len(a) - len(b)) > limit:
        return over
    width = len(b) + 1
    prev2, prev = None, [j if j <= limit else over for j in range(width)]
    for i, ca in enumerate(a, 1):
        cur = [over] * width
        if i <= limit:
            cur[0] = i
        for j in range(max(1, i - limit), min(len(b), i + limit) + 1):
            cb = b[j - 1]
            value = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if prev2 is not None and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                value = min(value, prev2[j - 2] + 1)
            cur[j] = min(value, over)
        prev2, prev = prev, cur
    return min(prev[-1], over)


def to_unicode(domain: str) -> tuple[str, str | None]:
    """The domain with ``xn--`` labels decoded, and an error if one would not decode."""
    labels, error = [], None
    for label in domain.split("."):
        if label.startswith("xn--"):
            try:
                decoded = label[4:].encode("ascii").decode("punycode")
                # A real IDN label decodes to non-ASCII and encodes back to itself.
                if decoded.isascii() or decoded.encode("punycode").decode("ascii") != label[4:]:
                    raise ValueError(label)
                label = decoded
            except Exception:
                error = f"the label {show(label)} is not valid punycode"
        labels.append(label)
    return ".".join(labels), error


def scripts(label: str) -> set[str]:
    out = set()
    for ch in label:
        if ch.isalpha():
            try:
                out.add(unicodedata.name(ch).split(" ")[0])
            except ValueError:
                out.add("UNKNOWN")
    return out


def _char_names(text: str) -> str:
    odd = [ch for ch in dict.fromkeys(text) if not ch.isascii()]
    return ", ".join(f"{ch} is U+{ord(ch):04X} {unicodedata.name(ch, 'UNNAMED')}" for ch in odd[:4])


def _name_and_suffix(domain: str) -> tuple[str, str]:
    """The registrable label and the public suffix: ``("bank", "co.uk")`` for ``www.bank.co.uk``
    (``""`` for a bare suffix)."""
    suffix = public_suffix(domain)
    rest = domain[:-len(suffix) - 1] if domain.endswith("." + suffix) else ""
    return rest.rpartition(".")[2], suffix


@functools.cache  # a handful of suffixes, and of policies' word lists
def _words(suffix: str, more: tuple[str, ...] = ()) -> frozenset[str]:
    """The lure words (and a policy's ``words``) folded, with the protected domain's own suffix
    (``bankexample.com``)."""
    return frozenset(fold(w, False) for w in (*LURE_WORDS, *more, *suffix.split("."), "-"))


def _joins(label: str, words: frozenset[str]) -> tuple[list[bool], list[bool]]:
    """For each position i of ``label``: whether ``label[:i]``, and whether ``label[i:]``, is
    made of ``words`` end to end (``"securelogin"``). len(label) x the longest word steps."""
    longest, size = max(map(len, words)), len(label)
    heads, tails = [True] + [False] * size, [False] * size + [True]
    for end in range(1, size + 1):
        heads[end] = any(heads[i] and label[i:end] in words for i in range(max(0, end - longest), end))
    for start in range(size - 1, -1, -1):
        tails[start] = any(tails[j] and label[start:j] in words for j in range(start + 1, min(size, start + longest) + 1))
    return heads, tails


def _embedded(label: str, brand: str, words: frozenset[str], alone: bool = False) -> bool:
    """Whether ``label``, folded, holds ``brand`` (folded) joined to other text: any text for a
    long brand, lure words and hyphens for a short one. ``alone``: the brand by itself counts too."""
    if len(label) > LABEL_MAX or brand not in (label := fold(label, False)):
        return False
    if label == brand:
        return alone
    if len(brand) >= EMBED_ANYWHERE:
        return True
    heads, tails = _joins(label, words)
    start = label.find(brand)
    while start != -1:
        if heads[start] and tails[start + len(brand)]:
            return True
        start = label.find(brand, start + 1)
    return False


class Lookalike:
    """Does a sender domain imitate one we protect, or a header hide characters?

    Looks at the domains of the header From, Sender and Reply-To (every parser's
    reading) and of MAIL FROM. ``fail``, naming the protected domain imitated, when a
    domain that is not a protected domain (nor a subdomain of one):

    - decodes (``xn--`` punycode, or UTF-8 as written) to letters that read as a
      protected domain (:func:`~forgelab.plugins._skeleton.fold`: NFKC, the Unicode TR39
      skeleton, accents dropped, digits for letters);
    - mixes scripts inside one label (Latin with Cyrillic, ...), imitation or not;
    - is 1 edit away from a protected domain (2 when its name is longer than five
      letters), counting look-alike letters and digits (``examp1e``, ``b4nk``) as no edit;
    - holds the protected domain inside it (``bank.example.evil.example``);
    - has the protected name as its registrable label under another public suffix
      (``bank.com``, ``b\u00e2nk.co`` for ``bank.example``), or one that is that many edits
      away under the same suffix (``mail.bnak.example``);
    - joins the protected name to other words in a label, with or without hyphens:
      a name of ``EMBED_ANYWHERE`` (7) letters or more to anything, a shorter one to
      :data:`LURE_WORDS` only (``banklogin``, ``update-bank``, ``bankexample.com``, but not
      ``workshop``, ``foxnews`` or ``news.bbc.co.uk``);
    - holds invisible or space-like characters (U+200B..., U+2000...).

    Also ``fail`` when any header holds a bidi control (U+202E RIGHT-TO-LEFT OVERRIDE,
    U+2066..., U+200E/F), or an address header (From, Sender, Reply-To, To, Cc) an
    invisible character. ``softfail`` for an ``xn--`` label that is not valid punycode.

    Settings:

    - ``protect`` (default: the local domains plus ``bank.example``, ``shop.example``,
      ``news.example``, ``insure.example``): the domains to protect.
    - ``allow`` (default ``[]``): domains never reported as look-alikes (for instance
      a lab domain that is close to a protected one on purpose but is not a forgery).
    - ``words`` (default ``[]``): more words that count, beside a short protected name, as
      :data:`LURE_WORDS` do (``["zebra"]`` makes ``bankzebra.example`` a look-alike).
    """

    name = "lookalike"

    def __init__(self, settings: dict | None = None):
        settings = dict(settings or {})
        protect, allow, words = settings.get("protect"), settings.get("allow", []), settings.get("words", [])
        for key, value in (("protect", protect), ("allow", allow), ("words", words)):
            if value is not None and (not isinstance(value, (list, tuple)) or not all(isinstance(d, str) for d in value)):
                raise ValueError(f"lookalike: setting {key!r} must be a list of {'words' if key == 'words' else 'domain names'}")
        self.protect = [normalise_domain(d) for d in protect] if protect is not None else None
        self.allow = [normalise_domain(d) for d in allow]
        self.words = tuple(sorted({w.strip().lower() for w in words if w.strip()}))

    def protected(self, lab) -> list[str]:
        if self.protect is not None:
            return [d for d in self.protect if d]
        local = list(getattr(getattr(lab, "directory", None), "domains", []) or [])
        return list(dict.fromkeys(normalise_domain(d) for d in [*local, *LAB_DOMAINS]))

    @forgelab.hookimpl
    def forgelab_message(self, envelope, message, raw, lab):
        f = facts(envelope, message, raw)
        protected = self.protected(lab)
        candidates: dict[str, list[str]] = {}
        for source, domains in (("From", f.domains("from")), ("Sender", f.domains("sender")),
                                ("Reply-To", f.domains("reply-to")),
                                ("MAIL FROM", [domain_of(getattr(envelope, "mail_from", "") or "")])):
            for d in domains:
                if d:
                    candidates.setdefault(d, []).append(source)
        findings = []
        for domain, sources in list(candidates.items())[:_CHECKED]:
            findings.extend(self._domain(domain, " and ".join(sources), protected))
        findings.extend(self._headers(f))
        return verdict(self.name, findings,
                       f"No sender domain imitates {', '.join(protected)}, and no header hides characters.",
                       protected=protected, checked={show(d): s for d, s in list(candidates.items())[:_CHECKED]})

    def _domain(self, domain: str, source: str, protected: list[str]) -> list[dict]:
        if any(domain == a or domain.endswith("." + a) for a in self.allow):
            return []
        unicode_form, error = to_unicode(domain)
        shown = show(domain) if unicode_form == domain else f"{show(domain)} ({show(unicode_form)})"
        out = []
        hidden = [ch for ch in unicode_form if ch in INVISIBLE or ch in BIDI]
        if hidden:
            out.append(finding("fail", f"The {source} domain {shown} holds invisible characters: {_char_names(''.join(hidden))}.",
                               domain=show(domain)))
        if error:
            out.append(finding("softfail", f"The {source} domain {show(domain)}: {error}.", domain=show(domain)))
        if any(unicode_form == p or unicode_form.endswith("." + p) for p in protected):
            return out
        for label in unicode_form.split("."):
            found = scripts(label)
            if len(found) > 1:
                out.append(finding("fail", f"The {source} domain {shown} mixes {' and '.join(sorted(found))} letters "
                                           f"in one label: {_char_names(label)}.", domain=show(domain)))
                break
        for p in protected:
            why = self._imitates(unicode_form, p, self.words)
            if why:
                out.append(finding("fail", f"The {source} domain {shown} imitates {p}: {why}.",
                                   domain=show(domain), unicode=show(unicode_form), imitates=p))
                break
        return out

    @staticmethod
    @short_memo()  # a pure function of two names; senders' domains come back message after message
    def _imitates(domain: str, protected: str, more_words: tuple[str, ...] = ()) -> str | None:
        if len(domain) > NAME_MAX:  # no DNS name (a folded header): the plain check only, the work stays small
            return f"it holds {protected} inside a different domain" if f".{protected}." in f".{domain}." else None
        name, suffix = _name_and_suffix(protected)
        if fold(domain) == fold(protected):
            odd = _char_names(domain)
            return f"it reads the same ({odd})" if odd else "it swaps letters for look-alike digits or letters"
        limit = 1 if len(name) <= 5 else 2
        # Only a distance within the limit is shown; beyond it, "too far" is all that matters.
        edits = min(distance_within(domain, protected, limit), distance_within(fold(domain), fold(protected), limit))
        if edits <= limit:
            return f"it is {edits} typing slip{'s' if edits > 1 else ''} away"
        if f".{protected}." in f".{domain}.":
            return f"it holds {protected} inside a different domain"
        their_name, their_suffix = _name_and_suffix(domain)
        if not (name and their_name):
            return None
        if fold(their_name) == fold(name):
            return f"it is the name {name!r} under .{their_suffix} instead of .{suffix}"
        if their_suffix == suffix and distance_within(blur(their_name), blur(name), limit) <= limit:
            return f"its name {show(their_name)!r} is a typing slip away from {name!r}"
        brand, words = fold(name, False), _words(suffix, more_words)
        if _embedded(their_name, brand, words):
            return f"it holds the name {name!r} in {show(their_name)!r}"
        for label in domain[:-len(their_name) - len(their_suffix) - 1].split("."):
            if _embedded(label, brand, words, alone=len(brand) >= EMBED_ANYWHERE):
                return f"it holds the name {name!r} in {show(label)!r}"
        return None

    @staticmethod
    def _headers(f) -> list[dict]:
        out, seen = [], set()
        for field in f.block.fields:
            address = field.key in ADDRESS_FIELDS
            text = field.value + decode_words(field.value)
            if not (_HIDDEN_RE if address else _BIDI_RE).search(text):
                continue
            watched = BIDI | INVISIBLE if address else BIDI
            odd = "".join(dict.fromkeys(ch for ch in text if ch in watched))
            if odd and (field.key, odd) not in seen:
                seen.add((field.key, odd))
                out.append(finding("fail", f"The {show(field.name)} header on line {field.line} holds "
                                           f"{_char_names(odd)}, which changes what a reader sees.",
                                   field=show(field.name), line=field.line))
        return out
