"""Scheduling: pure computations over doctors' working hours and appointments."""
