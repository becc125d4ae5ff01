"""Key custody and signing: signers, signed notes over checkpoints and blocks."""
