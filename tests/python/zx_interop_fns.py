"""Named functions the Python worker offers in the interop tests."""


def add(a, b):
    return a + b


def fail(message):
    raise ValueError(message)


def echo(*args):
    return list(args)
