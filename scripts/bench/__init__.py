"""`make bench`: the saga system measured under load, beside what it replaces, in one run."""
