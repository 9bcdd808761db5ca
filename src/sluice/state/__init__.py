"""State: the database (SQLite by default, PostgreSQL for scale-out) and what lives in it."""
