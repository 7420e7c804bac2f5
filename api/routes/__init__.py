"""Route modules: importing one registers its endpoints in api.registry.ENDPOINTS."""
