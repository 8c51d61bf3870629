"""How messages travel between producers, the maintainer and workers: the Redis/SQLite
storage with its delivery gate and doorbell (``broker``), dispatch straight from a submit
(``direct_dispatch``) and group commit of submits (``group_commit``)."""
