"""forgelab's built-in defences, each an ordinary pluggy plugin (shipped as ``forgelab.plugins``)."""
