"""The real payrun processes for end-to-end tests: they live in testkit/stack.py (shared with bench/); these
names stay importable from here."""

from __future__ import annotations

from testkit.stack import ROOT, Client, Stack, StartFailed, free_port, sim_json, wait_http

__all__ = ["ROOT", "Client", "Stack", "StartFailed", "free_port", "sim_json", "wait_http"]
