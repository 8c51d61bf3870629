"""Job types, the job API, workers and the maintainer of EduRise Queue."""
