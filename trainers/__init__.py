"""`make check-trainers`: the trainers' own data code on exported samples (see check.py)."""
