"""Live updates: the push that renders committed changes, the websockets and the Server-Sent Events."""
