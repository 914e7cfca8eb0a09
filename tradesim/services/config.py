"""The system configuration: one TOML file for instruments, accounts, risk, compliance and settings.

Precedence for the settings in `[system]`: command-line flags > `TRADESIM_*` environment variables >
the file > the built-in defaults (`tradesim/services/default.toml`, which also documents every key).
A bad file fails with a `ConfigError` naming the key, before anything starts.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from tradesim.domain import Instrument, OffTickError
from tradesim.services.agents.service import AgentsConfig, agent_accounts
from tradesim.services.algos.config import Settings as AlgosConfig
from tradesim.services.compliance import ComplianceConfig
from tradesim.services.compliance.config import compliance_config_from_dict
from tradesim.services.marketdata.reference import GbmParams
from tradesim.services.risk import RiskConfig
from tradesim.services.risk.config import risk_config_from_dict
from tradesim.services.risk.monitor_config import MonitorConfig
from tradesim.services.signals.config import SignalsConfig
from tradesim.services.venue.shards import Shard, ShardMap, ShardMapError

DEFAULT_FILE = Path(__file__).with_name("default.toml")
ENV_PREFIX = "TRADESIM_"

T = TypeVar("T")

SECTIONS = frozenset({"system", "instruments", "accounts", "risk", "compliance", "monitor", "api",
                      "marketdata", "agents", "replays", "signals", "shards", "algos"})


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and the key."""


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    data_dir: str = "./data"
    bus: str = "memory://"
    db: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    snapshot_every: int = 10_000
    # Distributed mode, venue role: which venue shard this process runs ("" = the only one), how many
    # copies its JetStream journal keeps (on a NATS cluster), and its election's lease (s): a crashed
    # leader is replaced after about that long.
    shard: str = ""
    journal_replicas: int = 1
    venue_ttl: float = 0.75

    def __post_init__(self) -> None:
        if not 1 <= self.journal_replicas <= 5:
            raise ValueError(f"journal_replicas must be 1 to 5, got {self.journal_replicas}")
        if not 0.2 <= self.venue_ttl <= 60:
            raise ValueError(f"venue_ttl must be 0.2 to 60 seconds, got {self.venue_ttl}")

    @property
    def journal_target(self) -> str:
        """Where the journal lives: the database URL if one is set, else the data directory."""
        return self.db or self.data_dir


class InstrumentConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    symbol: str
    tick_size: Decimal
    lot_size: int = 1
    multiplier: Decimal = Decimal(1)
    currency: str = "USD"
    margin_rate: Decimal = Decimal(0)
    price_band: Decimal | None = None
    flags: list[str] = []
    maker_fee_bps: Decimal = Decimal(0)
    taker_fee_bps: Decimal = Decimal(0)
    # Where the price process starts and what risk bands refer to before the first trade.
    reference_price: Decimal | None = None


class AccountConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    cash: Decimal = Decimal(0)
    kind: str = "cash"
    currency: str = "USD"


class ApiSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[api]`: the HTTP API's auth and rate limits (REST and WebSocket)."""

    # HS256 key for access tokens; "" = a random one generated once and kept in <data_dir>/jwt.secret.
    jwt_secret: str = ""
    token_ttl: int = 3600  # seconds an access token is valid
    key_recheck: float = 5.0  # seconds a token exchanged for an API key trusts that the key is not revoked
    rate_limit: float = 50.0  # requests per second per user / API key (token bucket refill)
    rate_burst: int = 100  # bucket size
    login_rate_limit: float = 1.0  # token requests per second per client address
    login_burst: int = 10
    ws_rate_limit: float = 10.0  # WebSocket messages per second per connection (token bucket refill)
    ws_rate_burst: int = 100  # bucket size: enough to subscribe to the 100-subscription maximum at once
    ws_rate_strikes: int = 10  # refused WebSocket messages tolerated (one forgiven per second); the next closes

    def __post_init__(self) -> None:
        if self.token_ttl <= 0:
            raise ValueError(f"token_ttl must be positive, got {self.token_ttl}")
        if self.key_recheck <= 0:
            raise ValueError(f"key_recheck must be positive, got {self.key_recheck}")
        if self.rate_limit <= 0 or self.login_rate_limit <= 0 or self.ws_rate_limit <= 0:
            raise ValueError("rate_limit, login_rate_limit and ws_rate_limit must be positive")
        if self.rate_burst < 1 or self.login_burst < 1 or self.ws_rate_burst < 1:
            raise ValueError("rate_burst, login_burst and ws_rate_burst must be at least 1")
        if self.ws_rate_strikes < 0:
            raise ValueError(f"ws_rate_strikes must be 0 or more, got {self.ws_rate_strikes}")


class MarketDataConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[marketdata]`: the tick interval, the reference price process, and what is recorded."""

    interval: float = 0.1  # seconds between ticks
    seed: int = 0
    gbm: GbmParams = GbmParams()  # every symbol's reference price process...
    symbols: dict[str, GbmParams] = {}  # ...unless it has its own
    record_every: int = 10  # store one tick in N (bars are always stored)


class ShardConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[[shards]]`: a venue shard (its own journal, leader and standbys) and the symbols it holds."""

    name: str
    symbols: list[str]


class ReplayConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`[[replays]]`: a LOBSTER message file replayed into the venue as background order flow."""

    symbol: str  # a listed instrument
    messages: str  # path of the LOBSTER message file (its orderbook file is found beside it)
    speed: float = 1.0  # 1 = the file's own pace, 10 = ten times faster, 0 = as fast as the venue answers
    limit: int | None = None  # stop after this many lines


class SystemConfig(msgspec.Struct, frozen=True, kw_only=True):
    settings: Settings
    instruments: list[Instrument]
    # Reference prices in ticks, for the symbols that have one.
    reference_prices: dict[str, int]
    accounts: list[AccountConfig]
    risk: RiskConfig
    compliance: ComplianceConfig
    monitor: MonitorConfig = MonitorConfig()
    marketdata: MarketDataConfig = MarketDataConfig()
    agents: AgentsConfig = AgentsConfig()
    replays: list[ReplayConfig] = []
    source: str = ""
    api: ApiSettings = ApiSettings()
    signals: SignalsConfig = SignalsConfig()
    algos: AlgosConfig = AlgosConfig()
    shards: list[ShardConfig] = []

    def shard_map(self) -> ShardMap:
        """The venue shards (`[[shards]]`; without it, one shard `main` with every instrument)."""
        symbols = [i.symbol for i in self.instruments]
        if not self.shards:
            return ShardMap.single(symbols)
        return ShardMap([(s.name, s.symbols) for s in self.shards], symbols)

    def venue_shard(self, name: str = "") -> Shard:
        """The shard a venue process runs: `name` ("" = the only one; an error if there are several)."""
        shards = self.shard_map()
        if not name:
            if shards.sharded:
                raise ConfigError(f"{self.source}: the venue has {len(shards.shards)} shards "
                                  f"({', '.join(s.name for s in shards.shards)}): say which one this venue "
                                  "runs (--shard NAME)")
            return shards.shards[0]
        try:
            return shards.shard(name)
        except ShardMapError as exc:
            raise ConfigError(f"{self.source}: {exc}") from None

    def instrument(self, symbol: str) -> Instrument:
        for instrument in self.instruments:
            if instrument.symbol == symbol:
                return instrument
        raise KeyError(symbol)

    def trading_accounts(self) -> dict[str, tuple[Decimal, str, str]]:
        """`{account: (cash, kind, currency)}` of every account the system trades: the `[[accounts]]`, the
        agents' accounts, and the signals agent's (unless `[[accounts]]` lists it). Every process that
        books or checks trades (OMS, accounts, risk monitor) must open the same set, so it is computed
        here once rather than in each role."""
        accounts = {a.id: (a.cash, a.kind, a.currency) for a in self.accounts}
        accounts.update(agent_accounts(self.agents, self.instruments))
        sig = self.signals
        accounts.setdefault(sig.account, (sig.cash, sig.kind, sig.currency))
        return accounts

    def with_settings(self, **changes: Any) -> SystemConfig:
        """A copy with some settings replaced (the command line's overrides); None values are ignored."""
        given = {key: value for key, value in changes.items() if value is not None}
        return msgspec.structs.replace(self, settings=msgspec.structs.replace(self.settings, **given))


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> SystemConfig:
    """The default configuration, or the file at `path` layered over it, then `TRADESIM_*` overrides."""
    default = _read(DEFAULT_FILE)
    data = default if path is None else _merge(default, _read(Path(path)))
    source = str(path) if path is not None else "built-in defaults"
    settings = _settings(data.get("system", {}), source, os.environ if env is None else env)
    instruments = [_instrument(c, source) for c in _instrument_configs(data, source)]
    agents = _checked(data.get("agents", {}), AgentsConfig, source, "agents")
    listed = {i.symbol for i in instruments}
    for entry in agents.symbols:
        if entry.symbol not in listed:
            raise ConfigError(f"{source}: agents: {entry.symbol} is not a listed instrument")
    replays = _checked(data.get("replays", []), list[ReplayConfig], source, "replays")
    for replay in replays:
        if replay.symbol not in listed:
            raise ConfigError(f"{source}: replays: {replay.symbol} is not a listed instrument")
        if not Path(replay.messages).is_file():
            raise ConfigError(f"{source}: replays: no LOBSTER message file at {replay.messages}")
        if replay.speed < 0:
            raise ConfigError(f"{source}: replays: speed must be 0 (as fast as possible) or positive, "
                              f"got {replay.speed}")
    shards = _checked(data.get("shards", []), list[ShardConfig], source, "shards")
    try:
        if shards:
            ShardMap([(s.name, s.symbols) for s in shards], [i.symbol for i in instruments])
    except ShardMapError as exc:
        raise ConfigError(f"{source}: shards: {exc}") from None
    return SystemConfig(
        shards=shards,
        settings=settings,
        instruments=instruments,
        reference_prices=_reference_prices(_instrument_configs(data, source), source),
        accounts=_accounts(data.get("accounts", []), source),
        risk=_section(risk_config_from_dict, data.get("risk", {}), source, "risk"),
        compliance=_section(compliance_config_from_dict, data.get("compliance", {}), source, "compliance"),
        monitor=_checked(data.get("monitor", {}), MonitorConfig, source, "monitor"),
        marketdata=_checked(data.get("marketdata", {}), MarketDataConfig, source, "marketdata"),
        agents=agents,
        replays=replays,
        source=source,
        api=_convert(data.get("api", {}), ApiSettings, source, "api"),
        signals=_checked(data.get("signals", {}), SignalsConfig, source, "signals"),
        algos=_checked(data.get("algos", {}), AlgosConfig, source, "algos"),
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from exc


def _merge(default: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """`[system]` and `[api]` keys override the defaults one by one. A file that lists its own
    `[[instruments]]` defines its own venue: nothing else is inherited (the demo's agents, limits and
    accounts are about the demo's instruments). A file without instruments tweaks the demo venue:
    each section it gives replaces the default one."""
    unknown = set(given) - SECTIONS
    if unknown:
        raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(sorted(SECTIONS))})")
    base = default if "instruments" not in given else {}
    merged = {**base, **given}
    for keyed in ("system", "api"):
        merged[keyed] = {**default.get(keyed, {}), **given.get(keyed, {})}
    return merged


def _settings(table: object, source: str, env: Mapping[str, str]) -> Settings:
    overrides: dict[str, Any] = {}
    for field in msgspec.structs.fields(Settings):
        value = env.get(ENV_PREFIX + field.name.upper())
        if value is not None:
            overrides[field.name] = int(value) if field.type is int and value.isdigit() else \
                float(value) if field.type is float and _is_number(value) else value
    base = _convert(table, Settings, source, "system")
    try:
        return msgspec.structs.replace(base, **overrides)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: bad TRADESIM_* environment override: {exc}") from exc


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _instrument_configs(data: dict[str, Any], source: str) -> list[InstrumentConfig]:
    configs = _convert(data.get("instruments", []), list[InstrumentConfig], source, "instruments")
    symbols = [c.symbol for c in configs]
    duplicates = sorted({s for s in symbols if symbols.count(s) > 1})
    if duplicates:
        raise ConfigError(f"{source}: instruments: {', '.join(duplicates)} listed twice")
    return configs


def _instrument(config: InstrumentConfig, source: str) -> Instrument:
    try:
        return Instrument(
            symbol=config.symbol, tick_size=config.tick_size, lot_size=config.lot_size,
            multiplier=config.multiplier, currency=config.currency, margin_rate=config.margin_rate,
            price_band=config.price_band, flags=frozenset(config.flags),
            maker_fee_bps=config.maker_fee_bps, taker_fee_bps=config.taker_fee_bps,
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: instruments.{config.symbol}: {exc}") from exc


def _reference_prices(configs: list[InstrumentConfig], source: str) -> dict[str, int]:
    prices: dict[str, int] = {}
    for config in configs:
        if config.reference_price is None:
            continue
        try:
            prices[config.symbol] = _instrument(config, source).to_ticks(config.reference_price)
        except OffTickError as exc:
            raise ConfigError(f"{source}: instruments.{config.symbol}.reference_price: {exc}") from exc
    return prices


def _accounts(table: object, source: str) -> list[AccountConfig]:
    accounts = _convert(table, list[AccountConfig], source, "accounts")
    seen: set[str] = set()
    for account in accounts:
        if account.kind not in ("cash", "margin"):
            raise ConfigError(f"{source}: accounts.{account.id}.kind must be 'cash' or 'margin', "
                              f"not {account.kind!r}")
        if account.id in seen:
            raise ConfigError(f"{source}: accounts: {account.id} listed twice")
        seen.add(account.id)
    return accounts


def _checked(table: object, tp: type[T], source: str, where: str) -> T:
    try:
        return _convert(table, tp, source, where)
    except ValueError as exc:  # a Struct's own __post_init__ checks
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{source}: [{where}]: {exc}") from exc


def _convert(value: object, tp: type[T], source: str, where: str) -> T:
    try:
        return msgspec.convert(value, tp, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {where}: {exc}") from exc


def _section(build: Any, value: object, source: str, where: str) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [{where}] must be a table")
    try:
        result = build(value)
    except ValueError as exc:
        raise ConfigError(f"{source}: [{where}]: {exc}") from exc
    return result
