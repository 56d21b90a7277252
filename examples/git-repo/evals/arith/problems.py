"""Fixed problems, so every run of the same commit scores the same."""
PROBLEMS = [(a, (a * 37) % 100) for a in range(50, 100)]
