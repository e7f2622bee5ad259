"""``fsmlog console``: a web console on the sources the CLI reads (the embedded file or AWS).

Starlette + Jinja2 (autoescaped), served by uvicorn; installed with the
``console`` extra and imported only by ``fsmlog console``, never on the Lambda
path. Every read and every action calls the CLI's own functions
(``fsmlog.cli.machines``, ``fsmlog.cli.replay``, ``fsmlog.cli.deadletters``),
so the console and the CLI cannot disagree.
"""
