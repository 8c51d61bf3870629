"""The read models of the console, one module per page that reads them (docs/metrics.md):

- ``series``: :func:`~metrics.read.series.time_series`, the Metrics page's charts and the
  Overview's last-hour chart;
- ``overview``: the Overview's KPIs, success criteria and maintainer signal;
- ``queues``: the Queues page's per-queue summary (its partition breakdown is
  ``metrics.partitions``);
- ``errors``: the Errors page's error groups;
- ``capacity``: the Capacity page's Erlang C model and measured figures;
- ``periodic``: the Periodic page's health of the periodic jobs (also read by the alert rules);
- ``common``: what several of them share (argument checks, error rate, window totals).

Every read model takes a SQLAlchemy ``Engine`` and reads the rollup tables, or a bounded,
indexed part of the ledger; none writes.
"""
