"""Counters for ``GET /sim/stats``: what benchmarks read to judge how a client treated the provider."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

FAULT_KINDS = ("error_before", "error_after", "hang_after", "slow")


@dataclass
class Stats:
    requests: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    rejected_429_pace: int = 0
    rejected_429_storm: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    # Approves of a batch already approved: refused, or paid again with SIM_SECOND_APPROVE_PAYS.
    second_approves: int = 0

    def view(self, *, max_in_any_window: int, batches: int) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_endpoint": dict(self.by_endpoint),
            "accepted": self.accepted,
            "rejected_429_pace": self.rejected_429_pace,
            "rejected_429_storm": self.rejected_429_storm,
            "max_in_any_window": max_in_any_window,
            "batches": batches,
            "second_approves": self.second_approves,
            "faults": {kind: self.faults[kind] for kind in FAULT_KINDS},
        }
