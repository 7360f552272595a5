"""`python -m ntklab` runs the same CLI as the `ntklab` console script."""

from ntklab.cli import main

if __name__ == "__main__":
    main()
