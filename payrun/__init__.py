"""The composition root: the `payrun` command, which may import every part (api_service, dispatcher_service,
simulator, shared). Nothing else imports this package; pyproject.toml's import-linter contracts check it."""
