"""The command line: ``forgelab serve``, ``forge``, ``attacks`` and the terminal transcript."""
