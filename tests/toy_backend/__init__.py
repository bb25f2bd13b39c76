"""A backend kind only the tests register (tests/test_new_backend.py): what a sixth
backend needs, and no more: this package and one entry in backends.registry.BACKENDS."""
