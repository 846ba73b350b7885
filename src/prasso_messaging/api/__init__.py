"""The REST API: one router per resource, plus deps.py (auth, database) and schemas.py."""
