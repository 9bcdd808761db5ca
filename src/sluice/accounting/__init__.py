"""Accounting: what a response cost. Budgets and rate limits per key will live here too."""
