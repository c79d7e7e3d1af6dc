"""The STTModel catalogue entry as pure functions: from the parsed model, its status and the
Jobs found in the cluster to the new status and the objects to apply (`planner.py`)."""
