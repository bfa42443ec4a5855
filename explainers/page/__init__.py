"""The page around the tabs: how Gradio calls a handler, when a tab draws, deep links, lessons, long jobs."""
