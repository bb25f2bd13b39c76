"""The JSON API (django-ninja): its operations, request/response schemas and token sign-in."""
