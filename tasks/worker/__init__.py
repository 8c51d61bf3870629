"""The worker process: its runtime (``runtime``: consumer, heartbeat, handlers), how it gets
attempts (``attempt_fetcher``, ``prefetch``), how it records them (``attempt_writer``), job
processes (``process_pool``, ``process_child``) and per-job logs (``job_logs``)."""
