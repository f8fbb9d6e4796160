"""What binding a port beyond loopback exposes, said once for the Gateway and the OrderManager.

The price and news feeds carry no authentication: anyone who can reach them reads the market.
The order port authenticates a client by the shared token in its hello (order_manager.token or
TRADESTACK_TOKEN), so an OrderManager listening beyond loopback without one would book orders
from anyone on the network: it refuses to start unless order_manager.allow_no_token says so.
"""

from __future__ import annotations

import ipaddress
import logging

from processes.shared.config import Config, ConfigError, effective_token

LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback(address: str) -> bool:
    """Whether `address` (an IP literal or a name) can only be reached from this host."""
    if address.lower() in LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(address.partition("%")[0]).is_loopback
    except ValueError:
        return False   # a host name: it may resolve to anything


def check_gateway(cfg: Config, log: logging.Logger) -> None:
    """Warn when the feed listens beyond loopback (it has nothing to refuse on)."""
    listen = cfg.gateway.listen
    if not is_loopback(listen):
        log.warning("gateway.listen = %s is not loopback: the price and news feeds are "
                    "unauthenticated, anyone who reaches ports %d and %d reads them (the "
                    "order port needs a token: order_manager.token or TRADESTACK_TOKEN)",
                    listen, cfg.network.price_port, cfg.network.news_port)


def check_order_manager(cfg: Config, log: logging.Logger) -> None:
    """Warn when the order port listens beyond loopback; ConfigError without a token there
    unless order_manager.allow_no_token."""
    om = cfg.order_manager
    if is_loopback(om.listen):
        return
    if effective_token(om.token):
        log.warning("order_manager.listen = %s is not loopback: the price feed is "
                    "unauthenticated; order clients must send the token (a shared secret, in "
                    "cleartext: no TLS)", om.listen)
        return
    if not om.allow_no_token:
        raise ConfigError(
            f"order_manager.listen = {om.listen} is not loopback and no token is set: anyone "
            "who reaches the order port could trade. Set order_manager.token (or "
            "TRADESTACK_TOKEN), or order_manager.allow_no_token = true to accept that")
    log.warning("order_manager.listen = %s is not loopback and NO token is required "
                "(order_manager.allow_no_token): anyone who reaches port %d can trade; the "
                "price feed is unauthenticated too", om.listen, cfg.network.order_port)
