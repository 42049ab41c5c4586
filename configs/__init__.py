"""Run configs shipped with MultiJEPA, found by name (`--config demo`)."""
