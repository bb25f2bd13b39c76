"""The ``local`` backend: tasks run as processes on the portal host."""
