"""Time-to-goal benchmark: ``mlops tune`` against the floor, KerasTuner and the retrain loop."""
