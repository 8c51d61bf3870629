"""The composition root: the ``queuectl`` command line (``cli``) and the supervisor of
``queuectl up`` (``supervisor``). The only package that may import every other one
(docs/architecture.md, "Packages")."""
