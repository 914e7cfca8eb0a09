"""The system configuration: defaults, file layering, environment overrides, and errors that name the key."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tradesim.services.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tradesim.toml"
    path.write_text(text)
    return path


def test_defaults_list_the_demo_venue() -> None:
    config = load_config(env={})
    assert [i.symbol for i in config.instruments] == ["IF2501.CFFEX", "IC2501.CFFEX", "AAPL.SIM", "MSFT.SIM"]
    futures = config.instrument("IF2501.CFFEX")
    assert futures.multiplier == Decimal(300) and futures.margin_rate == Decimal("0.12")
    assert config.reference_prices["IF2501.CFFEX"] == 19750  # 3950.0 / 0.2
    assert config.settings.bus == "memory://" and config.settings.journal_target == "./data"
    assert [p.name for p in config.compliance.packs_for("fatima")] == ["sharia"]
    assert config.risk.limits_for("alice", futures).position_limit == 200


def test_a_file_overrides_system_keys_one_by_one_and_replaces_lists(tmp_path: Path) -> None:
    path = write(tmp_path, """
[system]
port = 9000
[[instruments]]
symbol = "X.SIM"
tick_size = "0.05"
reference_price = "10.05"
[[accounts]]
id = "zed"
cash = "5"
""")
    config = load_config(path, env={})
    assert config.settings.port == 9000 and config.settings.bus == "memory://"
    assert [i.symbol for i in config.instruments] == ["X.SIM"]
    assert config.reference_prices == {"X.SIM": 201}
    assert [(a.id, a.cash) for a in config.accounts] == [("zed", Decimal(5))]
    # its own venue: the demo's agents and limits are not inherited
    assert config.agents.symbols == [] and config.risk.limits_for("zed", config.instruments[0]).max_order_qty is None


def test_a_file_without_instruments_tweaks_the_demo_venue(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[agents]\nseed = 7\n"), env={})
    assert config.agents.seed == 7 and config.agents.symbols == []  # the section replaces the default one
    assert [i.symbol for i in config.instruments][:1] == ["IF2501.CFFEX"]
    assert load_config(env={}).agents.symbols  # the demo venue has agents


def test_environment_overrides_the_file_and_flags_override_both(tmp_path: Path) -> None:
    path = write(tmp_path, '[system]\nbus = "nats://127.0.0.1:4333"\nport = 9000\n')
    config = load_config(path, env={"TRADESIM_BUS": "memory://x", "TRADESIM_PORT": "9100"})
    assert config.settings.bus == "memory://x" and config.settings.port == 9100
    assert config.with_settings(port=9200, db=None).settings.port == 9200


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[system]\nprot = 1\n", "prot"),
        ("[sytem]\n", "sytem"),
        ("[system]\nport = 'eighty'\n", "port"),
        ('[[instruments]]\nsymbol = "NODOT"\ntick_size = "0.01"\n', "CODE.VENUE"),
        ('[[instruments]]\nsymbol = "X.SIM"\ntick_size = "0.05"\nreference_price = "10.01"\n', "reference_price"),
        ('[[instruments]]\nsymbol = "X.SIM"\ntick_size = "0.05"\n[[instruments]]\nsymbol = "X.SIM"\n'
         'tick_size = "0.05"\n', "listed twice"),
        ('[[accounts]]\nid = "a"\nkind = "crypto"\n', "kind"),
        ('[[accounts]]\nid = "a"\n[[accounts]]\nid = "a"\n', "listed twice"),
        ("[risk.defaults]\nmax_order_qtty = 5\n", "max_order_qtty"),
        ('[compliance.accounts]\nbob = ["nope"]\n', "nope"),
        ("this is not toml", "not valid TOML"),
        ('[[agents.symbols]]\nsymbol = "NOPE.SIM"\n', "NOPE.SIM is not a listed instrument"),
        ("[marketdata]\ninterval = 'fast'\n", "interval"),
        ("[algos]\nlease = 0.1\npoll = 0.2\n", "lease .0.1. must be longer than poll"),
        ("[algos]\nack_wait = 0\n", "ack_wait must be positive"),
        ("[algos]\nackwait = 3\n", "ackwait"),
    ],
)
def test_bad_config_names_what_is_wrong(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(write(tmp_path, text), env={})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.toml", env={})


def test_api_section_defaults_overrides_and_errors(tmp_path: Path) -> None:
    assert (load_config().api.token_ttl, load_config().api.jwt_secret) == (3600, "")
    path = tmp_path / "api.toml"
    path.write_text('[api]\ntoken_ttl = 60\nrate_limit = 2.5\n')
    api = load_config(path).api
    assert (api.token_ttl, api.rate_limit, api.rate_burst) == (60, 2.5, 100)  # other keys keep their defaults
    for text, needle in (('[api]\ntoken_tll = 60\n', "token_tll"), ('[api]\ntoken_ttl = 0\n', "token_ttl"),
                         ('[api]\nrate_burst = "many"\n', "rate_burst")):
        path.write_text(text)
        with pytest.raises(ConfigError, match=needle):
            load_config(path)


def test_algo_worker_timing_comes_from_the_algos_table(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[algos]\nack_wait = 3.0\nlease = 2.0\npoll = 0.1\n"), env={})
    assert (config.algos.ack_wait, config.algos.lease, config.algos.poll) == (3.0, 2.0, 0.1)
    assert load_config(env={}).algos.ack_wait == 30.0
