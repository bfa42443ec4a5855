"""One module per tab: TITLE, pure figure functions, and build(page), which returns the tab's View."""
