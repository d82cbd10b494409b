"""Example models, shipped in the package so that they run from any directory:
``serve-gateway worker gateway.examples.<module>:<Class>``.

- ``echo:Echo``: identity model with test knobs (sleep, fail, tag);
- ``mlp:MLP``: a numpy MLP whose cost is one matmul chain per batch (``pip install
  'serve-gateway[examples]'`` for numpy);
- ``iris:Iris``: typed input and output (pydantic): validation, ``/openapi.json``, ``/docs``;
- ``tokens:Tokens``: a generator ``predict`` that streams tokens (SSE or JSON lines).
"""
