"""The HTTP routes, one module per area: ``health`` (GET /health), ``models`` (GET /v1/models) and
``completions`` (POST /v1/chat/completions and /v1/completions). Each exports ``router``."""

from tuneforge.serve.routes import completions, health, models

ROUTERS = (health.router, models.router, completions.router)
