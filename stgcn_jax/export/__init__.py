"""Deploy a trained model: a compressed sparse file, and a portable StableHLO artifact.

Modules: ``sparse`` (the ``.npz`` format), ``stablehlo`` (the ``jax.export`` artifact) and
``deploy`` (finding, loading and sizing a model). Import from them; this package re-exports
nothing.

Sparse export (``save_sparse`` / ``load_sparse`` in ``stgcn_jax.export.sparse``): one ``.npz``
file (no pickle) holding

* ``format``: the format name (``sparse.FORMAT``) as bytes;
* ``spec``: the model spec (``model.json``'s content) as UTF-8 JSON bytes;
* ``index``: JSON bytes listing every leaf of ``params`` and ``batch_stats`` in order: its key
  path, shape, dtype, whether it is stored ``sparse`` or ``dense`` and, if sparse, how many entries
  it keeps;
* ``dtypes``: JSON bytes, the sorted list of the leaves' dtype strings (``"<f4"``); ``<i>`` below
  is a position in this list;
* ``values_<i>``: the kept (nonzero) entries of every sparse leaf of dtype ``i``, concatenated in
  index order (C order within a leaf);
* ``mask``: ``np.packbits`` of the concatenated keep masks of the sparse leaves (one bit a weight);
* ``dense_<i>``: every other leaf of dtype ``i`` (biases, BatchNorm, graphs, dense kernels),
  concatenated.

A leaf is stored sparse when the prunable predicate (``sparsity.PrunableSpec()``: the backbone's
block conv kernels) says so, or when it is any other ``kernel`` with more than 1/32 of its entries
zero (then the bit mask costs less than the zeros). "Kept" means not equal to zero
(``sparse.nonzero_bits``): NaNs are kept, ``-0.0`` is not. A weight masked as ``w * 0`` is ``-0.0``
for a negative ``w``; it comes back as ``+0.0``, an equal value. So ``load_sparse`` returns the
saved weights bit for bit except that a zero of a sparse leaf is ``+0.0``, and equal logits.
The few concatenated arrays keep the zip overhead to a few hundred bytes whatever the model size.
``load_sparse`` checks everything in the file before it allocates anything (a damaged or tampered
file is one ``ExportError``).

Portable artifact (``export_stablehlo``, ``input_contract``, ``JOINT_NAMES`` in
``stgcn_jax.export.stablehlo``): ``jax.export`` of the eval-mode forward pass with the
weights baked in as constants, input ``float32 (B, M, T, V, C)`` with a symbolic batch ``B``;
``FILE`` holds ``Exported.serialize()`` and ``FILE.json`` the input contract. Running it needs only
``jax`` and ``numpy``::

    exp = jax.export.deserialize(open(FILE, "rb").read())
    logits = exp.call(x)      # x: float32 (B, M, T, V, C) -> (B, num_classes)
"""
