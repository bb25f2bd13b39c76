"""The audit trail: who did what, and when (append-only model, the record helper, the middleware)."""
