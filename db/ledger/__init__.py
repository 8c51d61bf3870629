"""Every job state transition, split by caller (see ``db.ledger.core`` for the rules they share):
``producer`` inserts jobs, ``maintainer`` stages, dispatches, reconciles and rescues,
``attempts`` holds a worker's fenced writes of one attempt, ``admin`` cancels and retries,
``dependencies`` counts and reads workflow edges."""
