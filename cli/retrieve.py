"""``unicorpus retrieve`` (issue 5)."""


def register(subparsers) -> None:
    pass
