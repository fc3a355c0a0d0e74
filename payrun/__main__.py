"""`python -m payrun`: the `payrun` command without its console script."""

from payrun.cli import main

if __name__ == "__main__":
    main()
