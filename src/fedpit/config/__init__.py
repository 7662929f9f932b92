"""Configuration: the typed schema of a run (``schema``) and its cross-field checks (``checks``)."""
