"""What the project reports: run records of real training runs, the paper-vs-ours reproduction report, the default
model's card and the README's generated blocks."""
