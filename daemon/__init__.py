"""ripieno.daemon: the real-time service, its ports, engine, scheduler and control plane."""
