"""The FastAPI application: routers per audience, auth, RFC 9457 problems."""
