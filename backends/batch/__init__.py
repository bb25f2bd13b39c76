"""AWS Batch: settings (:mod:`.settings`), the adapter (:mod:`.adapter`) and its parts."""
