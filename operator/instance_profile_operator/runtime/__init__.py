"""What every controller runs on: the work queue, metrics and memory housekeeping."""
