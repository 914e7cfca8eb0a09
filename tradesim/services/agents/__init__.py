"""Trading agents: Avellaneda-Stoikov market makers built as seed 02's pipeline, and Poisson noise traders.

They trade only through the OMS, each with its own account, so risk, positions and P&L apply to them.
"""

from tradesim.services.agents.market_maker import MarketMakerAgent, MarketMakerParams
from tradesim.services.agents.noise import NoiseTraderAgent, NoiseTraderParams
from tradesim.services.agents.quotes import QuoteParams
from tradesim.services.agents.risk_adjuster import PositionState, RiskParams
from tradesim.services.agents.service import AgentsConfig, AgentsService, SymbolAgents, agent_accounts

__all__ = [
    "AgentsConfig", "AgentsService", "MarketMakerAgent", "MarketMakerParams", "NoiseTraderAgent",
    "NoiseTraderParams", "PositionState", "QuoteParams", "RiskParams", "SymbolAgents", "agent_accounts",
]
