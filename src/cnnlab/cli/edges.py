"""Subcommands of `cnnlab` in this module: not implemented yet."""


def register(sub):
    pass
