"""The admin API and its command-line side.

- ``server``: the aiohttp listener, its security rules and the built-in routes;
- ``traffic``, ``scale``, ``rollouts``: the mutating endpoints, written against ``facade`` (what
  they may ask of the running gateway), never against the gateway itself;
- ``adminclient``: the CLI's synchronous client, and ``render``: the text it prints.

Importing this package is cheap (no aiohttp): the CLI imports ``adminclient`` through it.
"""
