"""Drawing: Plotly figures as plain dicts, layout defaults, lecture style, token chips, shared widgets."""
