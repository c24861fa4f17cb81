"""Email authentication for forgelab: SPF, DKIM, DMARC, ARC, iprev and Authentication-Results.

Each module holds compute-once functions that keep their result in the per-message
(``envelope.cache``) or per-session (``session.cache``) dict, so the plugins can run
in any order and no check repeats another's work or DNS lookup.
"""
