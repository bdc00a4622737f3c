"""Detection over long recordings: the job, its plan and work units, events and their scoring."""
