"""The Gradio side: tabs (explainers.tabs), the page around them (explainers.page), drawing (explainers.draw).

Importing one tab imports only what it uses; explainers.chapters lists every tab, in the page's order."""
