"""``unicorpus index`` (issue 5)."""


def register(subparsers) -> None:
    pass
