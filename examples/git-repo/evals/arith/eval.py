"""Counts how many of 50 multiplication problems a toy model gets right."""
import json
import os

from problems import PROBLEMS

def model(a, b):
    # The "model" under test: exact except when both factors are above 90.
    return a * b if a <= 90 or b <= 90 else a * b + 1

right = sum(model(a, b) == a * b for a, b in PROBLEMS)
score = right / len(PROBLEMS)
print(f"{right}/{len(PROBLEMS)} products right")
with open(os.environ["CRUCIBLE_RESULT_PATH"], "w") as f:
    json.dump({"score": score, "metrics": {"right": right, "n": len(PROBLEMS)}}, f)
