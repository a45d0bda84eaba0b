"""Reports for people: plots (PNG, matplotlib, `plots`), the report directory (JSON,
Markdown, plots and the page, `report_directory`) and its self-contained HTML page (`html`).

May import: matplotlib, `gfa_keras.evaluation.report` (the tables, number formatting and
JSON cleaning every report shares). Loaded only when used.
"""
