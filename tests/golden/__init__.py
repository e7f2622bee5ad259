"""Committed golden logs and the test that folds them."""
