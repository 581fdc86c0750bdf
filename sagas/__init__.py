"""The sagas this system runs, each declared once (`signup.py`); see common/declaration.py."""
