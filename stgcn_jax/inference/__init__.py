"""Predictions of a trained model on raw skeleton files and on a live stream of frames.

>>> from stgcn_jax.inference import predictor, raw_input, sources
>>> model = sources.load_predictor("runs/ntu60/model")        # or a workdir, or "wd1,wd2,..."
>>> samples, bad = raw_input.read_samples("S001C001P001R001A011.skeleton", layout=model.layout)
>>> result = model.predict([s.record for s in samples])       # scores (N, classes), summed
>>> predictor.top_k(result.probs[0], model.class_names, k=5)  # [(name, index, probability), ...]

* ``sources.py``: ``load_predictor``: a model checkpoint (``model.json`` + ``variables/``), a
  training workdir, a joint-ensemble workdir (its ``members/s<sparsity>/``) or several of them
  comma-separated, a post-hoc ensemble whose clip-averaged softmax scores are summed, as
  ``stgcn_jax.fusion`` fuses. The test pipeline is the one the model was trained with
  (``model.json``'s ``pipeline``, else the workdir's ``config.json``, else pyskl's test defaults).
* ``predictor.py``: ``Predictor`` runs the members (those that share the architecture and the
  pipeline are stacked and run in one ``jax.vmap``-ed call), ``top_k``, ``write_predictions``.
* ``raw_input.py``: ``read_samples``: raw files read by ``stgcn_jax.data.formats`` exactly as the
  converters would store them; the data's layout must be the model's.
* ``frames.py`` and ``stream.py``: one frame of a JSON-lines stream, and the sliding-window
  predictions over such a stream.

Import from the modules; this package re-exports nothing.
"""
