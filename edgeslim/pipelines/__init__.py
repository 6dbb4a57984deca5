"""Pipelines: one request dataclass and one ``run()`` per stage, above the stage packages.

The CLI parses options into a request and renders what ``run`` returns; a Python caller builds
the same request. Defaults live in the request (``None``: the stage's own default), run
directories (lock, overwrite rules, interrupted runs) are handled once in :mod:`.rundir`.
"""
