"""stgcn-jax: sparse spatial-temporal graph convolution networks for skeleton action recognition.

Importing the package changes no process state; the entry points call
``stgcn_jax.runtime.configure_xla()`` themselves.
"""
