"""Operator tools: they read what the processes publish (stats snapshots, the price book) and
never talk to a process."""
