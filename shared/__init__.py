"""Code both payrun services use: settings, logging, the database and its repositories."""
