"""The names of the roles `tradesim run --role` runs, and the checks a role's settings must pass.

Kept free of heavy imports so that building the command line costs nothing; the roles themselves
live in `tradesim.services.roles.processes`, the service factories shared with the embedded `System`
in `tradesim.services.roles.build`.
"""

from __future__ import annotations

import os
import re
import socket
from typing import Final

ROLES: Final = ("venue", "oms", "accounts", "risk", "marketdata", "agents", "algos", "signals", "api")
"""Every role: one service per process (`tradesim run --role ROLE`)."""

DB_ROLES: Final = {
    "venue": "the PostgreSQL copy of the venue journal (audit chain)",
    "oms": "the OMS order and parent stores",
    "marketdata": "the recorded ticks and bars",
    "api": "the API users",
}
"""Roles that keep state other processes (or their own successors on another host) must see, and what
they keep there: these need `--db postgresql://…`."""

SINGLE_ACTIVE: Final = frozenset({"venue", "oms", "marketdata"})
"""Roles that elect one leader among their instances; the others wait as STANDBY."""


class RoleError(ValueError):
    """A role cannot run with these settings; the message says what to change."""


def check_role(role: str, bus: str, db: str) -> None:
    """Raises RoleError unless `role` is known, the bus is shared (NATS) and a role that needs PostgreSQL has it."""
    if role not in ROLES:
        raise RoleError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    if not bus.startswith(("nats://", "tls://")):
        raise RoleError(f"role {role} needs a shared bus: --bus nats://host:port (got {bus!r}; a memory:// bus "
                        f"lives inside one process, so the other roles could not reach this one)")
    if role in DB_ROLES and not db.startswith(("postgresql://", "postgres://")):
        got = f"got {db!r}" if db else "none given"
        raise RoleError(f"role {role} needs --db postgresql://… for {DB_ROLES[role]}, shared by every instance "
                        f"({got})")


_INSTANCE_RE: Final = re.compile(r"^[A-Za-z0-9_][-A-Za-z0-9_]{0,127}$")


def check_instance_id(instance_id: str) -> str:
    """An instance id names a registry key and an election participant: letters, digits, '-' and '_'."""
    if not _INSTANCE_RE.match(instance_id):
        raise RoleError(f"invalid --instance-id {instance_id!r}: use 1-128 letters, digits, '-' and '_' "
                        f"(starting with a letter, digit or '_')")
    return instance_id


def default_instance_id(role: str) -> str:
    """`{role}-{hostname}-{pid}`: unique per process, and says where to look for it (the hostname's dots
    and other characters a key cannot hold become '-')."""
    host = re.sub(r"[^-A-Za-z0-9_]", "-", socket.gethostname()) or "host"
    return check_instance_id(f"{role}-{host}-{os.getpid()}"[:128])
