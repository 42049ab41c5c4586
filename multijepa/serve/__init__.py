"""`multijepa serve`: a local search page and JSON API over an index (serve/app.py)."""
