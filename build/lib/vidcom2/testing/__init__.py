"""Offline helpers for tests and demos: tiny random-weight video LLMs with the real processors."""
