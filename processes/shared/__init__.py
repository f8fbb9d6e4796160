"""What the processes share: wire protocol, config, placement, runtime, telemetry, PnL."""
