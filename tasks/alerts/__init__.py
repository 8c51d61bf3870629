"""Alerts: the rules and their evaluation over the metrics (``rules``) and webhook delivery
from the notification outbox (``notify``); the maintainer loop that drives both is
``tasks.maintenance.alerts``."""
