"""EC2 instances, one per task: for now only its settings (:mod:`.settings`); the adapter comes later."""
