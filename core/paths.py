"""Where the project's files are: its own checkpoints, corpora, lessons and page assets. Imports nothing heavy."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"                 # what the project ships: checkpoints, corpora, lessons, web
DATA = ASSETS / "data"                   # the corpora (sources in assets/data/README.md)
CORPUS = DATA / "shakespeare.txt"        # what the tiny models learn from
LESSONS = ASSETS / "lessons"
WEB = ASSETS / "web"                     # the page's stylesheet and export script
