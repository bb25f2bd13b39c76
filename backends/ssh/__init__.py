"""What the schedulers reached over SSH (Slurm, PBS) share: the connection
(:mod:`.transport`), batch submission and shell access (:mod:`.scheduler`), and the
``ssh:`` settings block (:mod:`.settings`)."""
