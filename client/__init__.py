"""The public HTTP client (`Client`, `AsyncClient`): talks to a registry and verifies what it
receives against pinned keys."""
