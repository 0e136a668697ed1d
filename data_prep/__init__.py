"""Command-line converters from raw skeleton formats into the stgcn_jax tfds/array_record store.

One module per format (``python -m data_prep.<name> --help``): ``ntu``, ``pyskl``, ``kinetics``,
``nw_ucla`` and ``synthetic``. See ``data_prep/README.md``.
"""
