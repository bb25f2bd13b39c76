"""PBS (OpenPBS, PBS Professional, Torque) over SSH: the adapter (:mod:`.adapter`), job
scripts and qsub arguments (:mod:`.rendering`), the qstat/pbsnodes parsers
(:mod:`.parsing`, checked against the recorded output in ``fixtures/``) and the
settings (:mod:`.settings`)."""
