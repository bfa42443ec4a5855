"""One module per tab; TABS is the order they appear in."""
from explainers import overview

TABS = [overview]
