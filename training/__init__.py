"""ripieno.training: MIDI and corpus data, the fit loop (packing, TBPTT, DDP), evaluation, benchmarks."""
