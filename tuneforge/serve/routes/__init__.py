"""The HTTP routes, one module per area: ``health`` (GET /health), ``models`` (GET /v1/models) and
``completions`` (POST /v1/chat/completions and /v1/completions), and the fine-tuning API: ``files``
(/v1/files) and ``fine_tuning`` (/v1/fine_tuning/jobs). Each exports ``router``."""

from tuneforge.serve.routes import completions, files, fine_tuning, health, models

ROUTERS = (health.router, models.router, completions.router, files.router, fine_tuning.router)
