"""The shipped policies, as TOML files (shipped as ``forgelab.policies``)."""
