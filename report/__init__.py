"""What the project reports: run records of real training runs and the paper-vs-ours reproduction report."""
