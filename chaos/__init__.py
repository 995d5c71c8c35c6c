"""Chaos experiments on real parts: a private PostgreSQL, a Temporal dev server, an SMTP sink
and worker processes, broken on a schedule while orders run (``python -m chaos.run``)."""
