"""Readers of the raw dataset formats: one file -> one record, as the converters store it.

* ``files.py``: safe readers of regular files (size-bounded, no FIFO waits) and the coordinate rule.
* ``ntu.py``: NTU RGB+D ``.skeleton`` files and sample names.
* ``kinetics.py``: Kinetics-skeleton video JSON (ST-GCN's OpenPose release).
* ``nw_ucla.py``: NW-UCLA ``all_sqe`` JSON files.
* ``pyskl.py``: pyskl / mmaction2 annotation pickles (read by the restricted unpickler).

The converter programs (``data_prep/``) and raw-file prediction (``stgcn_jax.inference``) both read
through these; a record's fields are the ``(N, M, T, V, C)`` contract of ``stgcn_jax.data``.
"""
