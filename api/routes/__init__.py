"""API routers, one per audience."""
