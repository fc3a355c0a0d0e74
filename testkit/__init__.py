"""What the tests and the benchmarks share, and nothing else imports: PostgreSQL for tests (postgres.py), the
real payrun processes (stack.py) and THE ledger reconciliation (ledger.py).

Layering: testkit imports payrun's code (shared/); tests/ and bench/ import testkit; payrun's own packages
never import testkit, tests or bench (checked by lint-imports, see pyproject.toml).
"""
