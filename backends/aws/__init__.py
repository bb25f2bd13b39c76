"""What the AWS backends (``batch``, ``ec2``) share; for now their ``aws:`` settings block."""
