"""Execution algorithms: pure schedules (TWAP, VWAP, POV, Iceberg) and the COMPETE workers that drive algo
parents recorded by the OMS (docs/algos.md)."""

from tradesim.services.algos.config import Settings
from tradesim.services.algos.schedules import (
    Slice,
    due,
    even_split,
    iceberg_child,
    learned_profile,
    pov_child,
    pov_target,
    twap_schedule,
    u_profile,
    vwap_schedule,
)
from tradesim.services.algos.worker import DURABLE, AlgoWorker

__all__ = [
    "DURABLE",
    "AlgoWorker",
    "Settings",
    "Slice",
    "due",
    "even_split",
    "iceberg_child",
    "learned_profile",
    "pov_child",
    "pov_target",
    "twap_schedule",
    "u_profile",
    "vwap_schedule",
]
