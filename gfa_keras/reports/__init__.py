"""Reports for people: plots (PNG, matplotlib) and the report directory (JSON, Markdown,
self-contained HTML).

May import: matplotlib, `gfa_keras.evaluation.report`. Loaded only when used.
"""
