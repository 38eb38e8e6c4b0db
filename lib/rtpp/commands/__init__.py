"""The control commands: one handler module per command (`handle(cmd, ctx) -> Reply`),
listed with their parsing in registry.py; the parser is parse.py, replies reply.py,
error codes errors.py, the handlers' view of the daemon context.py."""
