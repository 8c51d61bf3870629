"""Job types that ship with EduRise Queue: generic built-ins (``builtin``), the EduRise
platform's (``edurise``) and the periodic system jobs: metrics rollup and retention
(``system``)."""
