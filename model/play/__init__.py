"""How ripieno plays: the engine, its scheduler and what it knows of the player, free of clocks and I/O.

Here, not in `daemon`, because the daemon, `ripieno continue` and `ripieno-train eval` must run
the very same performance code (eval scores what the daemon would play).
"""
