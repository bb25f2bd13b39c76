"""AWS Batch: for now only its settings (:mod:`.settings`); the adapter comes later."""
