"""forgelab's built-in defences, each an ordinary pluggy plugin (shipped as ``forgelab.plugins``).

The plugins are the modules ``forgelab.core.registry.BUILTIN`` names. A module whose name
starts with ``_`` is not a plugin: it holds what the content defences share (``_facts``:
the parsed header; ``_header_block``, ``_mailbox``, ``_rfc5322``: how it is parsed;
``_domains``: comparing domains; ``_findings``: wording and folding their verdicts).
"""
