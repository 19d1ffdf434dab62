"""The data plane: where traffic goes (routing table) and what it did (per-colour stats)."""
