"""Thin entry points, one per pipeline stage: parse config, build the session, call library code,
write tables, return a summary. No business logic lives here."""
