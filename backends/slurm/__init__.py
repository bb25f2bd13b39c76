"""Slurm over SSH: the adapter (:mod:`.adapter`), the squeue/sacct/scontrol/sinfo
parsers (:mod:`.parsing`) and the settings (:mod:`.settings`)."""
