"""ripieno's benchmarks (`ripieno bench step | e2e | soak | startup | mqtt`) and the real peers they meet.

This package may import `ripieno.daemon` and `ripieno.model`; nothing in them imports it, except the
`ripieno bench` subcommand, which imports the bench it runs inside the function that runs it.
`peers.py` holds the one implementation of the real peers (JACK server, keyboard and synth clients,
mosquitto broker, `ripieno run` subprocess) that the benches and the integration tests both use.
"""
