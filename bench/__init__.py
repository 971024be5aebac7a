"""ripieno's benchmarks (`ripieno bench step | e2e | soak | startup | mqtt`) and the real peers they meet.

This package may import `ripieno.daemon` and `ripieno.model`; nothing in them imports it, except the
`ripieno bench` subcommand, which imports the bench it runs inside the function that runs it.
"""
