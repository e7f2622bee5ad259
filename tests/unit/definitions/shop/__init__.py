"""The action package of the contract's example fsm.yaml (docs/CONTRACT.md §1-2), for tests."""
