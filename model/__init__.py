"""ripieno.model: note events, their encoding, the LSTM, streaming inference, sampling, checkpoints."""
