"""Compliance: rule packs per account (restricted list, short sales, Sharia, concentration, order-to-trade)."""

from tradesim.services.compliance.config import (
    PACK_RULES,
    ComplianceConfig,
    CompliancePack,
    compliance_config_from_dict,
    load_compliance_config,
    parse_compliance_config,
)
from tradesim.services.compliance.engine import RULES, ComplianceEngine
from tradesim.services.compliance.violations import Violation, ViolationLog

__all__ = [
    "PACK_RULES",
    "RULES",
    "ComplianceConfig",
    "ComplianceEngine",
    "CompliancePack",
    "Violation",
    "ViolationLog",
    "compliance_config_from_dict",
    "load_compliance_config",
    "parse_compliance_config",
]
